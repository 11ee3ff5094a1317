using System.CommandLine;
using System.Globalization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Cli;

/// <summary>The subcommands of mobius.</summary>
public static partial class Commands
{
    /// <summary>The stage-1 checkpoint that ships with Mobius (made by the command in models/README.md).</summary>
    public static string DefaultCheckpoint => Path.Combine(AppContext.BaseDirectory, "models", "tiny-t2i.safetensors");

    /// <summary>
    /// The text-to-video model the demo fine-tunes: the stage-1 checkpoint's UNet with temporal layers trained
    /// serially on one motion (made by the command in models/README.md).
    /// </summary>
    public static string DefaultVideoCheckpoint => Path.Combine(AppContext.BaseDirectory, "models", "tiny-t2v.safetensors");

    /// <summary>The demo's learning rate when it fine-tunes a text-to-video model.</summary>
    public const float FineTuneLearningRate = 1e-4f;

    /// <summary>The demo's learning rate when it trains the temporal layers from the identity (a short run).</summary>
    public const float FromImageLearningRate = 1e-3f;

    /// <summary>Set by Program: cancelled on Ctrl-C.</summary>
    public static CancellationToken Cancellation { get; set; }

    /// <summary>Cancelled by the first interrupt when <see cref="StopsGracefully"/>: training stops and the report is finished.</summary>
    public static CancellationToken Stop { get; set; }

    /// <summary>Whether the running command finishes early on a first interrupt instead of cancelling (compare and demo, once training starts).</summary>
    public static volatile bool StopsGracefully;

    private static readonly Option<string> ConfigOption = new("--config") { Description = "model config: micro, tiny, small, ms256", DefaultValueFactory = _ => "tiny" };
    private static readonly Option<string> BackendOption = new("--backend") { Description = "cpu or cuda (MOBIUS_CUDA=sim: the simulated driver)", DefaultValueFactory = _ => "cpu" };
    private static readonly Option<string?> MathOption = new("--math")
    {
        Description = "how the cuda backend multiplies fp32 matrices and convolutions: fp32 (strict, the default; MOBIUS_MATH sets another), tf32 (tensor cores reading 11 significant bits, fp32 accumulation), or bf16 (GEMMs on bf16 tensor cores, 8 significant bits, fp32 accumulation; convolutions in tf32)",
    };

    private static readonly Option<int> SeedOption = new("--seed") { Description = "seed of initialisation, data order, noise and sampling", DefaultValueFactory = _ => 1 };
    private static readonly Option<int> ThreadsOption = new("--threads") { Description = "CPU threads (0: all cores)", DefaultValueFactory = _ => 0 };
    private static readonly Option<bool> WeightsOnlyOption = new("--weights-only") { Description = "leave the optimiser state out of the final checkpoint (smaller; it cannot be resumed)" };
    private static readonly Option<string?> BridgeOption = new("--bridge") { Description = $"the parallel topology's bridge: {string.Join(", ", ModelConfig.Bridges)} (default {ModelConfig.DefaultBridge})" };
    private static readonly Option<string?> MotionOption = new("--motion") { Description = "train and validate on clips of these motions only, e.g. move-right or grow,shrink (default: all)" };
    private static readonly Option<float> MinSnrOption = new("--min-snr")
    {
        Description = "min-SNR-gamma loss weighting: each clip's noise MSE weighted by min(SNR, gamma) / SNR, e.g. 5 (default 0: plain MSE)",
        DefaultValueFactory = _ => TrainOptions.DefaultMinSnrGamma,
    };

    private static readonly Option<string?> FreezeOption = new("--freeze")
    {
        Description = "temporal layers both topologies keep at their initial values, as name prefixes, e.g. down.2.,mid.,up.0.,up.1. (default: all train)",
    };

    private static readonly Option<bool> RecomputeOption = new("--recompute-spatial")
    {
        Description = "serial keeps only the inputs of the frozen spatial layers and recomputes them in backward (same gradients, less memory, more time)",
    };

    private static readonly Option<bool> RecomputeTemporalOption = new("--recompute-temporal")
    {
        Description = "both topologies keep only the inputs of the temporal layers and recompute them in backward (same gradients, less memory, more time)",
    };

    private static readonly Option<string> FrozenWeightsOption = new("--frozen-weights")
    {
        Description = "element type of the frozen weights of linear, convolution and embedding layers (both topologies alike; in sample, all of them): fp32, bf16 (half their memory, each rounded to the nearest bf16) or int8 (int8 values with a scale per 128 elements, about a quarter); every op still computes in fp32",
        DefaultValueFactory = _ => "fp32",
    };

    private static readonly Option<string> SavedActivationsOption = new("--saved-activations")
    {
        Description = "element type of the activations a step keeps for backward, in both topologies: fp32, or where that is safe bf16 (about half the bytes) or int8 with a scale per 128 elements (about a quarter); forward and the loss unchanged, gradients computed from the kept activations so rounded",
        DefaultValueFactory = _ => "fp32",
    };

    private static readonly Option<string> OptimizerStateOption = new("--optimizer-state")
    {
        Description = "element type of AdamW's two moments, in both topologies: fp32, or bf16 (half the optimizer state; each moment updated in fp32 and stored by stochastic rounding)",
        DefaultValueFactory = _ => "fp32",
    };

    private static readonly Option<int> ValidateEveryOption = new("--validate-every") { Description = "also measure both validation losses every N steps (0: before and after training only)", DefaultValueFactory = _ => 0 };
    private static readonly Option<int> LoopCorrectionOption = new("--loop-correction") { Description = "experimental: every K steps the loop bridge also takes serial's exact gradient and corrects the steps between by the running difference (0: off)", DefaultValueFactory = _ => 0 };
    private static readonly Option<int> ValidationBatchesOption = new("--validation-batches") { Description = "held-out batches in each validation loss (more: a steadier curve, slower validations)", DefaultValueFactory = _ => 4 };
    private static readonly Option<int> LoopCorrectionWarmupOption = new("--loop-correction-warmup") { Description = "experimental, with --loop-correction: the first N steps are all exact (serial's gradient): the loss falls fastest there", DefaultValueFactory = _ => 0 };
    private static readonly Option<float> LoopCorrectionMomentumOption = new("--loop-correction-momentum") { Description = "experimental: weight of the old running difference when --loop-correction folds in a new one", DefaultValueFactory = _ => 0.9f };
    private static readonly Option<string> LoopCorrectionModeOption = new("--loop-correction-mode") { Description = "experimental, with --loop-correction: scale (scale the loop's gradient per tensor by its fitted coefficient on the exact one) or mean (subtract the running mean of loop minus exact; wants --loop-correction-momentum 0.99)", DefaultValueFactory = _ => "scale" };
    private static Option<int> FrontierOption(int fallback) => new("--frontier")
    {
        Description = "after the run, time both topologies at every recompute policy, N steps each with their steps taking turns (0: the memory at every policy, planned, only)",
        DefaultValueFactory = _ => fallback,
    };

    private static readonly Option<bool> KeepBestOption = new("--keep-best") { Description = "early stopping: sample and finally validate each topology with its weights at its lowest validation loss (needs --validate-every)" };

    private static readonly Option<float?> FrameNoiseOption = new("--frame-noise")
    {
        Description = $"correlation of the diffusion noise across a clip's frames, in [0, 1) (default: a text-to-video checkpoint's own, which it must keep; {ModelConfig.DefaultFrameNoiseCorrelation} from a text-to-image one)",
    };

    private static readonly Option<float> GuidanceOption = new("--guidance") { Description = "classifier-free guidance scale when sampling (0: unconditional, 1: conditional only)", DefaultValueFactory = _ => 4f };

    private static readonly Option<float?> SampleFrameNoiseOption = new("--sample-frame-noise")
    {
        Description = $"correlation across a clip's frames of the noise sampling starts from, in [0, 1) (default: {TextToVideo.DefaultSampleFrameNoise}, or the model's frame noise where higher: even a model trained with independent frame noise draws steadier clips from correlated starting noise)",
    };

    private static readonly Option<int?> BatchOption = new("--batch") { Description = "clips per training step (default: the config's; tiny: 2)" };
    private static readonly Option<int> CosineOption = new("--cosine-steps") { Description = "decay the learning rate along a cosine to a tenth at this step (0: constant)", DefaultValueFactory = _ => 0 };
    private static readonly Option<float> EmaOption = new("--ema")
    {
        Description = "keep an exponential moving average of the trained weights with this decay (e.g. 0.999; 0: off) and validate and sample with it; train and pretrain save it in their checkpoint, where sample draws with it",
        DefaultValueFactory = _ => 0f,
    };
    private static readonly Option<int> AccumulateOption = new("--accumulate")
    {
        Description = "gradient accumulation: each step runs this many batches one after another and takes one optimizer step, the update of a batch this many times larger at the activation memory of one",
        DefaultValueFactory = _ => 1,
    };

    private static readonly Option<int> RanksOption = new("--ranks")
    {
        Description = "data parallel: this many replicas of the model, each on a backend of its own (cpu: its share of the threads; cuda: device rank mod the device count), run a step's batches at the same time and average their gradients (--collectives): the update of accumulating that many batches (a step takes ranks x accumulate x batch clips)",
        DefaultValueFactory = _ => 1,
    };

    private static readonly Option<string> CollectivesOption = new("--collectives")
    {
        Description = "how --ranks average their gradients: auto (NCCL on the devices where every cuda rank has a device of its own and NCCL loads, else through host memory), nccl or host",
        DefaultValueFactory = _ => "auto",
    };

    private static readonly Option<long> MemoryLimitOption = new("--memory-limit-mb") { Description = "cap the backend's memory (MiB, 0: none)", DefaultValueFactory = _ => 0 };
    private static readonly Option<string?> DataOption = new("--data")
    {
        Description = "train on a folder of animated GIFs listed with their captions in captions.jsonl, one {\"file\": \"a.gif\", \"caption\": \"...\"} per line (every tenth held out for validation), instead of the generated emoji clips",
    };

    /// <summary>Every command.</summary>
    public static IEnumerable<Command> All() => [Info(), Pretrain(), Train(), Sample(), Compare(), Demo(), Plan(), Profile(), Clips()];

    /// <summary><c>--batch</c> as <see cref="TrainOptions.Batch"/>: null (not given) is 0, the config's batch.</summary>
    private static int CheckBatch(int? batch) => batch switch
    {
        null => 0,
        >= 1 => batch.Value,
        _ => throw new UsageException($"--batch must be at least 1 clip, got {batch}."),
    };

    /// <summary><c>--cosine-steps</c>, checked: 0 (a constant rate) or more.</summary>
    private static int CheckCosine(int steps) => steps >= 0
        ? steps
        : throw new UsageException($"--cosine-steps must be 0 (a constant learning rate) or more steps, got {steps}.");

    /// <summary><c>--ema</c>, checked: a decay in [0, 1), 0 for none.</summary>
    private static float CheckEma(float decay) => decay is >= 0f and < 1f
        ? decay
        : throw new UsageException($"--ema must be a decay in [0, 1) (0: off; e.g. 0.999), got {decay.ToString(CultureInfo.InvariantCulture)}.");

    /// <summary><c>--accumulate</c>, checked: at least 1, and 1 beside <c>--loop-correction</c>, whose exact steps recompute one batch.</summary>
    private static int CheckAccumulate(int accumulate, int loopCorrection) => accumulate switch
    {
        < 1 => throw new UsageException($"--accumulate must be at least 1 batch a step, got {accumulate}."),
        > 1 when loopCorrection > 0 => throw new UsageException("--accumulate does not combine with --loop-correction, whose exact steps recompute one batch."),
        _ => accumulate,
    };

    /// <summary>A recorded run's batch as <c>--batch</c> would give it (null: the config's).</summary>
    private static int? RecordedBatch(TrainOptions options) => options.Batch > 0 ? options.Batch : null;

    /// <summary>The validation options of compare, demo and train, checked alike.</summary>
    private static void CheckValidation(int validateEvery, int validationBatches, bool keepBest)
    {
        if (validateEvery < 0)
        {
            throw new UsageException($"--validate-every must be 0 or more steps, got {validateEvery}.");
        }

        if (validationBatches < 1)
        {
            throw new UsageException($"--validation-batches must be at least 1, got {validationBatches}.");
        }

        if (keepBest && validateEvery == 0)
        {
            throw new UsageException("--keep-best needs --validate-every N: without validations during training there is no best step to go back to.");
        }
    }

    /// <summary>
    /// Checks before any training or sampling that a file (a checkpoint unless <paramref name="what"/> says otherwise) can be
    /// written at <paramref name="path"/> (its folder created if need be, a probe file written and removed there), so that
    /// a bad --out fails at once instead of after the run.
    /// </summary>
    private static string CheckWritable(string path, string what = "a checkpoint file name")
    {
        try
        {
            string full = Path.GetFullPath(path);
            if (Directory.Exists(full))
            {
                throw new UsageException($"--out {path} is a folder; give {what}.");
            }

            string dir = Path.GetDirectoryName(full)!;
            Directory.CreateDirectory(dir);
            using (File.Create(Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.probe"), 1, FileOptions.DeleteOnClose))
            {
            }

            return path;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new UsageException($"cannot write --out {path}: {e.Message}");
        }
    }

    /// <summary>The --log file, created (or truncated) before the first step, so that a bad path fails before any training.</summary>
    private static StreamWriter OpenLog(string path)
    {
        try
        {
            return new StreamWriter(path, append: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot write the --log file {path}: {e.Message}");
        }
    }

    /// <summary>The --loop-correction-warmup steps, checked: 0 or more, and only beside --loop-correction.</summary>
    private static int CheckLoopCorrectionWarmup(int steps, int loopCorrection) => steps switch
    {
        < 0 => throw new UsageException($"--loop-correction-warmup must be 0 (none) or a number of steps, got {steps}."),
        > 0 when loopCorrection == 0 => throw new UsageException("--loop-correction-warmup needs --loop-correction K: it adds exact steps to the correction's."),
        _ => steps,
    };

    /// <summary>The --loop-correction steps, checked.</summary>
    private static int CheckLoopCorrection(int steps) =>
        steps >= 0 ? steps : throw new UsageException($"--loop-correction must be 0 (off) or a number of steps, got {steps}.");

    /// <summary>
    /// The --loop-correction steps, --loop-correction-momentum (where the command has it) and --loop-correction-mode,
    /// checked; the mode parsed.
    /// </summary>
    private static LoopCorrectionMode ParseLoopCorrectionMode(int steps, float? momentum, string mode)
    {
        CheckLoopCorrection(steps);
        if (momentum is { } m && !(m >= 0 && m < 1))
        {
            throw new UsageException($"--loop-correction-momentum must be in [0, 1), got {m}.");
        }

        return mode.ToLowerInvariant() switch
        {
            "mean" => LoopCorrectionMode.Mean,
            "scale" => LoopCorrectionMode.Scale,
            _ => throw new UsageException($"--loop-correction-mode must be mean or scale, got '{mode}'."),
        };
    }

    /// <summary>The --freeze prefixes, checked against the temporal layers of the config (built on the meta backend, nothing allocated).</summary>
    private static List<string>? ParseFreeze(string? text, ModelConfig config, string? bridge)
    {
        if (text is null)
        {
            return null;
        }

        var prefixes = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        if (prefixes.Count == 0)
        {
            throw new UsageException("--freeze needs at least one layer-name prefix, e.g. down.2.,mid.");
        }

        using var meta = new MetaBackend();
        using var unet = new UNet3D(meta, config with { Bridge = ParseBridge(bridge) ?? ModelConfig.DefaultBridge }, Topology.Parallel, 0);
        try
        {
            unet.FreezeTemporal(prefixes);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--freeze: {e.Message}");
        }

        return prefixes;
    }

    private static List<Motion>? ParseMotions(string? text)
    {
        if (text is null)
        {
            return null;
        }

        var known = Enum.GetValues<Motion>().ToDictionary(m => m.ToString().ToLowerInvariant(), m => m);
        var motions = new List<Motion>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!known.TryGetValue(part.Replace("-", "", StringComparison.Ordinal).ToLowerInvariant(), out var m))
            {
                throw new UsageException($"unknown motion '{part}'; use {string.Join(", ", Enum.GetValues<Motion>().Select(Kebab))}.");
            }

            motions.Add(m);
        }

        return motions.Count > 0 ? motions.Distinct().ToList() : throw new UsageException("--motion names no motion.");
    }

    private static string Kebab(Motion m) => string.Concat(m.ToString().Select((ch, i) => i > 0 && char.IsUpper(ch) ? "-" + char.ToLowerInvariant(ch) : char.ToLowerInvariant(ch).ToString()));

    private static float MinSnr(ParseResult p) => CheckMinSnr(p.GetValue(MinSnrOption));

    private static float CheckMinSnr(float gamma) =>
        gamma >= 0 && float.IsFinite(gamma) ? gamma : throw new UsageException($"--min-snr must be 0 (off) or positive, got {gamma}.");

    /// <summary>The metadata entries of a <c>--keep-best</c> checkpoint: its validation loss, and over how many batches.</summary>
    private const string BestLossKey = "validation_loss", BestBatchesKey = "validation_batches";

    /// <summary>
    /// The validation loss and step recorded in an existing <c>--keep-best</c> file, when it is from this run's past
    /// (not after its current step) and its loss is over the same number of batches; null otherwise.
    /// </summary>
    private static (float Loss, int Step)? PreviousBest(string path, int stepsDone, string batches)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        var previous = Checkpoint.Load(path);
        return previous.Step <= stepsDone && previous.Extra.GetValueOrDefault(BestBatchesKey) == batches
            && float.TryParse(previous.Extra.GetValueOrDefault(BestLossKey), NumberStyles.Float, CultureInfo.InvariantCulture, out float loss)
            ? (loss, previous.Step) : null;
    }

    /// <summary>The checkpoint metadata entry where <c>train</c> records its <c>--motion</c> selection.</summary>
    private const string MotionsKey = "motions";

    /// <summary>The checkpoint metadata entry where <c>train</c> and <c>pretrain</c> record their <c>--data</c> folder.</summary>
    private const string DataKey = "data";

    /// <summary>Checkpoint metadata: how the backend that trained it multiplied (fp32, tf32 or bf16).</summary>
    private const string MathKey = "math";

    /// <summary>
    /// The math of a training run: --math when given; else, resuming on the cuda backend, the resumed run's (so that
    /// it continues exactly as it would have); else the backend's own. A resumed tensor-core run on the cpu backend
    /// computes in fp32.
    /// </summary>
    private static string? RunMath(ParseResult p, Checkpoint? resumed) =>
        p.GetValue(MathOption) ?? (resumed is not null && p.GetValue(BackendOption) is "cuda" ? resumed.Extra.GetValueOrDefault(MathKey) : null);

    /// <summary>
    /// The options of a run that may resume a checkpoint: a fresh run reads the command line; a resumed one takes
    /// the recorded value of each option the command line does not give, and names each one it gives that differs
    /// (that run does not continue as the first would have). A checkpoint from before options were recorded
    /// falls back to the command line, said once.
    /// </summary>
    private sealed class Recipe(ParseResult parse, string? resumeFrom, Checkpoint? checkpoint)
    {
        private readonly List<string> _changed = [];
        private readonly List<string> _kept = [];
        private bool _unrecorded;

        /// <summary>The option's value for this run; <paramref name="recorded"/> reads the checkpoint's run's.</summary>
        public T Pick<T>(Option<T> option, Func<TrainOptions, T> recorded)
        {
            var given = parse.GetValue(option)!;
            if (resumeFrom is null)
            {
                return given;
            }

            if (checkpoint?.TrainOptions is not { } options)
            {
                _unrecorded = true;
                return given;
            }

            var old = recorded(options);
            if (parse.GetResult(option) is not { Implicit: false })
            {
                return old;
            }

            if (!EqualityComparer<T>.Default.Equals(given, old))
            {
                _changed.Add($"{option.Name} {Show(given)} (the run had {Show(old)})");
            }

            return given;
        }

        /// <summary>Notes an option a resumed run cannot change (the seed fixes the data order) when the command line gives another value.</summary>
        public void Keep<T>(Option<T> option, T value, string what)
        {
            if (resumeFrom is not null && parse.GetResult(option) is { Implicit: false } && !EqualityComparer<T>.Default.Equals(parse.GetValue(option), value))
            {
                _kept.Add($"{option.Name} {Show(parse.GetValue(option))} ignored: a resumed run keeps its {what}, {Show(value)}");
            }
        }

        public void Announce()
        {
            if (resumeFrom is null)
            {
                return;
            }

            Console.WriteLine(_changed.Count > 0
                ? $"resuming {resumeFrom} after step {checkpoint!.Step} with options changed: {string.Join("; ", _changed)}. The run will not continue exactly as it would have."
                : $"resuming {resumeFrom} after step {checkpoint!.Step} with the options of the run that wrote it.");
            foreach (var line in _kept)
            {
                Console.WriteLine(line + ".");
            }

            if (_unrecorded)
            {
                Console.WriteLine($"{resumeFrom} does not record all of its run's options (an older checkpoint); the command line's are used.");
            }
        }

        private static string Show<T>(T value) => value switch
        {
            null => "the default",
            float f => f.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            bool b => b ? "on" : "off",
            _ => value.ToString()!,
        };
    }

    private static float? FrameNoise(ParseResult p)
    {
        float? rho = p.GetValue(FrameNoiseOption);
        return rho is null || (rho >= 0 && rho < 1) ? rho : throw new UsageException($"--frame-noise must be in [0, 1), got {rho}.");
    }

    private static DType FrozenWeights(ParseResult p) => ParseStorage(p.GetValue(FrozenWeightsOption)!, FrozenWeightsOption);

    private static DType SavedActivations(ParseResult p) => ParseStorage(p.GetValue(SavedActivationsOption)!, SavedActivationsOption);

    private static DType OptimizerState(ParseResult p) => ParseStorage(p.GetValue(OptimizerStateOption)!, OptimizerStateOption);

    /// <summary>
    /// The element type a storage option names: fp32 or bf16, and for frozen weights and saved activations also int8
    /// (int8 blocks; AdamW's moments are not kept so).
    /// </summary>
    private static DType ParseStorage(string value, Option<string> option)
    {
        bool int8 = option != OptimizerStateOption;
        return value switch
        {
            "fp32" => DType.Float32,
            "bf16" => DType.BFloat16,
            "int8" when int8 => DType.Int8Blocks,
            _ => throw new UsageException($"{option.Name} must be {(int8 ? "fp32, bf16 or int8" : "fp32 or bf16")}, got '{value}'."),
        };
    }

    /// <summary>The option value that names <paramref name="dtype"/> ("fp32", "bf16", "int8").</summary>
    internal static string StorageName(DType dtype) => dtype switch
    {
        DType.BFloat16 => "bf16",
        DType.Int8Blocks => "int8",
        _ => "fp32",
    };

    /// <summary>", bf16 frozen weights" and the like (<paramref name="what"/> kept in <paramref name="dtype"/>), or nothing for fp32: for titles and summaries.</summary>
    internal static string StorageNote(DType dtype, string what) => dtype == DType.Float32 ? "" : $", {StorageName(dtype)} {what}";

    private static float Guidance(ParseResult p)
    {
        float g = p.GetValue(GuidanceOption);
        return g >= 0 && float.IsFinite(g) ? g : throw new UsageException($"--guidance must be 0 or more, got {g}.");
    }

    private static float? SampleFrameNoise(ParseResult p)
    {
        float? rho = p.GetValue(SampleFrameNoiseOption);
        return rho is null || (rho >= 0 && rho < 1) ? rho : throw new UsageException($"--sample-frame-noise must be in [0, 1), got {rho}.");
    }

    private static string? ParseBridge(string? name) =>
        name is null || ModelConfig.Bridges.Contains(name.ToLowerInvariant()) ? name?.ToLowerInvariant()
        : throw new UsageException($"unknown bridge '{name}'; use {string.Join(", ", ModelConfig.Bridges)}.");

    private static Topology ParseTopology(string name) => name.ToLowerInvariant() switch
    {
        "serial" => Topology.Serial,
        "parallel" => Topology.Parallel,
        _ => throw new UsageException($"unknown topology '{name}'; use serial or parallel."),
    };

    internal static string Mb(long bytes) => (bytes / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture) + " MiB";
}

/// <summary>Config lookup that reports an unknown name as a usage error.</summary>
internal static class Configs
{
    public static ModelConfig Get(string name)
    {
        try
        {
            return ModelConfig.Get(name);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
    }
}
