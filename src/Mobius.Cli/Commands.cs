using System.CommandLine;
using System.Globalization;
using Mobius.Cuda;
using Mobius.Cuda.Interop;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Cpu;
using Mobius.Engine.Distributed;
using Mobius.Model;
using Mobius.Model.Training;
using Spectre.Console;

namespace Mobius.Cli;

/// <summary>The subcommands of mobius.</summary>
public static class Commands
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
        Description = "element type of the frozen weights of linear, convolution and embedding layers (both topologies alike; in sample, all of them): fp32, or bf16 (half their memory, each rounded to the nearest bf16; every op still computes in fp32)",
        DefaultValueFactory = _ => "fp32",
    };

    private static readonly Option<string> SavedActivationsOption = new("--saved-activations")
    {
        Description = "element type of the activations a step keeps for backward, in both topologies: fp32, or bf16 where that is safe (about 0.6 of the bytes; forward and the loss unchanged, gradients computed from the kept activations rounded to bf16)",
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

    // ---- clips ------------------------------------------------------------------------------------

    private static Command Clips()
    {
        var output = new Option<string>("--out") { Description = "folder to write the GIFs and captions.jsonl into (new, or without a captions.jsonl)", Required = true };
        var count = new Option<int>("--count") { Description = "clips to write", DefaultValueFactory = _ => 100 };
        var upscale = new Option<int>("--upscale") { Description = "write every pixel as an N x N block (the GIFs are read back at the config's size)", DefaultValueFactory = _ => 1 };
        var cmd = new Command("clips", "Writes generated emoji clips as a folder of GIFs with a captions.jsonl: what --data reads, to start a dataset from or to try --data with.")
            { output, count, ConfigOption, MotionOption, SeedOption, upscale };
        cmd.SetAction(p =>
        {
            int n = p.GetValue(count);
            if (n < 1)
            {
                throw new UsageException($"--count must be at least 1 clip, got {n}.");
            }

            if (p.GetValue(upscale) is < 1 or > 16)
            {
                throw new UsageException($"--upscale must be 1 to 16, got {p.GetValue(upscale)}.");
            }

            var config = Configs.Get(p.GetValue(ConfigOption)!);
            var source = new EmojiClips(new EmojiClipsOptions
            {
                Seed = p.GetValue(SeedOption), Frames = config.Frames, Height = config.Height, Width = config.Width, Count = n,
                Motions = ParseMotions(p.GetValue(MotionOption)),
            });
            string folder = p.GetValue(output)!;
            if (File.Exists(Path.Combine(folder, GifFolderClips.CaptionsFileName)))
            {
                throw new UsageException($"{Path.Combine(folder, GifFolderClips.CaptionsFileName)} already exists; write the clips to a new folder.");
            }

            var clips = Enumerable.Range(0, n).Select(source.Get).ToList();
            try
            {
                Ui.Counted("writing GIFs", n, progress => GifFolderClips.Export(folder, clips, new GifWriteOptions { Upscale = p.GetValue(upscale) }, progress), Cancellation);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"cannot write the clips to {folder}: {e.Message}");
            }

            AnsiConsole.MarkupLine($"wrote [bold]{n}[/] clips of {config.Frames} frames, {config.Height}x{config.Width} ({Markup.Escape(config.Name)}), and [bold]{Markup.Escape(Path.Combine(folder, GifFolderClips.CaptionsFileName))}[/]");
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary>
    /// The <c>--data</c> folder at the config's clip size (null without one); <c>--motion</c> selects generated clips
    /// and is refused beside it.
    /// </summary>
    private static GifFolderClips? OpenData(string? folder, ModelConfig config, string? motions)
    {
        RefuseMotionWithData(folder, motions);
        return folder is null ? null : Comparison.OpenFolder(folder, config);
    }

    private static void RefuseMotionWithData(string? folder, string? motions)
    {
        if (folder is not null && motions is not null)
        {
            throw new UsageException("--motion selects generated clips; with --data the folder's GIFs are used as they are.");
        }
    }

    /// <summary>Before any training: the folder's captions against <paramref name="tokenizer"/>, then every GIF read once.</summary>
    private static void CheckData(GifFolderClips data, Tokenizer tokenizer)
    {
        data.CheckCaptions(tokenizer);
        Ui.Counted($"reading the GIFs of {data.Folder}", data.Count, progress => data.Verify(progress), Cancellation);
    }

    /// <summary>Says which clips a run trains on.</summary>
    private static void AnnounceData(GifFolderClips data, bool validates)
    {
        int held = Enumerable.Range(0, data.Count).Count(i => GifFolderClips.IsHeldOut(i, data.Count));
        AnsiConsole.MarkupLine(Markup.Escape(validates
            ? $"data: {data.Count} GIFs in {data.Folder}: {data.Count - held} to train on, {held} held out for validation"
            : $"data: {data.Count} GIFs in {data.Folder}: {data.Count - held} to train on ({held} held out)"));
    }

    // ---- profile ----------------------------------------------------------------------------------

    private static Command Profile()
    {
        var kernel = new Option<string>("--kernel") { Description = "workload: " + string.Join(", ", Mobius.Engine.Profiling.OpWorkloads.All.Select(w => w.Name)), Required = true };
        var shape = new Option<string?>("--shape") { Description = "shape overrides, e.g. n=512,h=2,f=8,d=32 (defaults: the tiny model's)" };
        var direction = new Option<string>("--direction") { Description = "fwd or bwd (convolutions: bwd_data, bwd_filter)", DefaultValueFactory = _ => "fwd" };
        var iterations = new Option<int>("--iterations") { Description = "timed runs", DefaultValueFactory = _ => 100 };
        var cmd = new Command("profile", "Run one kernel workload repeatedly (for an ncu or nsys session, e.g. ncu --kernel-name temporal_attention_fwd_f32 mobius profile --kernel temporal_attention --backend cuda) and print its time.")
            { kernel, shape, direction, iterations, BackendOption, MathOption, ThreadsOption };
        cmd.SetAction(p =>
        {
            Mobius.Engine.Profiling.OpWorkload w;
            Dictionary<string, int> dims;
            try
            {
                w = Mobius.Engine.Profiling.OpWorkloads.Get(p.GetValue(kernel)!);
                dims = Mobius.Engine.Profiling.OpWorkloads.Shape(w, p.GetValue(shape));
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }

            string dir = p.GetValue(direction)!;
            if (dir is not ("fwd" or "bwd" or "bwd_data" or "bwd_filter"))
            {
                throw new UsageException($"--direction must be fwd, bwd, bwd_data or bwd_filter, got '{dir}'.");
            }

            int n = p.GetValue(iterations);
            if (n < 1)
            {
                throw new UsageException($"--iterations must be at least 1, got {n}.");
            }

            using var backend = Backends.Create(p.GetValue(BackendOption)!, p.GetValue(ThreadsOption), 0, p.GetValue(MathOption));
            using var run = w.Create(backend, dims, dir);
            // On the host the warm-up goes on until the JIT has settled the op's code; a device run warms up 3 launches
            // (an ncu session profiles every launch).
            var t = Mobius.Engine.Profiling.OpWorkload.Time(backend, run, n, settleSeconds: backend is Mobius.Engine.Cpu.CpuBackend ? 5 : 0);
            AnsiConsole.MarkupLine($"{w.Name} {dir} [[{string.Join(", ", dims.Select(kv => $"{kv.Key}={kv.Value}"))}]] on {Markup.Escape(backend.DeviceName)}");
            AnsiConsole.MarkupLine($"  {t.Milliseconds:0.000} ms per run over {n} runs, {t.GFlops:0.0} GFLOP/s, {t.GBytes:0.0} GB/s of compulsory traffic");
            return ExitCodes.Success;
        });
        return cmd;
    }

    // ---- info --------------------------------------------------------------------------------------

    private static Command Info()
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "describe this checkpoint instead: its model, training, data and what it keeps" };
        var cmd = new Command("info", "Backends and devices found (and where native libraries were looked for), configs with parameter counts, the checkpoints that ship; or one checkpoint (--checkpoint).")
            { checkpoint };
        cmd.SetAction(p =>
        {
            if (p.GetValue(checkpoint) is { } path)
            {
                DescribeCheckpoint(path, Checkpoint.Load(path));
                return ExitCodes.Success;
            }

            using (var cpu = new CpuBackend())
            {
                AnsiConsole.MarkupLine($"[bold]cpu[/]: {Markup.Escape(cpu.DeviceName)}");
            }

            AnsiConsole.MarkupLine($"[bold]cuda[/]: {Markup.Escape(Backends.DescribeCuda())}");
            AnsiConsole.MarkupLine($"[bold]nccl[/] (--ranks on cuda): {Markup.Escape(Backends.DescribeNccl())}");
            var table = new Table().AddColumns("config", "channels", "frames x size", "parameters", "serial trainable", "parallel trainable", "temporal share");
            using var meter = new CpuBackend(threads: 1);
            foreach (var c in ModelConfig.Presets)
            {
                var counts = ParameterCounts.Of(c);
                table.AddRow(c.Name, string.Join("/", c.Channels), $"{c.Frames} x {c.Height}x{c.Width}", $"{counts.Total:N0}",
                    $"{counts.SerialTrainable:N0}", $"{counts.ParallelTrainable:N0}", $"{(double)counts.SerialTrainable / counts.Total:P0}");
            }

            AnsiConsole.Write(table);
            var shipped = new Table().Title("checkpoints that ship (mobius info --checkpoint FILE for one)").AddColumns("file", "model", "topology", "steps", "trained on");
            foreach (string file in new[] { DefaultCheckpoint, DefaultVideoCheckpoint }.Where(File.Exists))
            {
                var ckpt = Checkpoint.Load(file);
                shipped.AddRow(Markup.Escape(Path.GetFileName(file)), ckpt.Config.Name, ModelKind(ckpt),
                    $"{ckpt.Step:N0}", Markup.Escape(TrainedOn(ckpt)));
            }

            if (shipped.Rows.Count > 0)
            {
                AnsiConsole.Write(shipped);
            }

            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary>"text-to-image", or "text-to-video, serial" / "text-to-video, parallel".</summary>
    private static string ModelKind(Checkpoint ckpt) =>
        ckpt.Topology == Topology.Spatial ? "text-to-image" : $"text-to-video, {ckpt.Topology.ToString().ToLowerInvariant()}";

    /// <summary>The clips a checkpoint was trained on, as its metadata records them.</summary>
    private static string TrainedOn(Checkpoint ckpt) =>
        ckpt.Extra.GetValueOrDefault(DataKey) is { } folder ? $"the GIFs of {folder}"
        : ckpt.Extra.GetValueOrDefault(MotionsKey) is { } motions ? $"generated clips: {motions}"
        : "generated clips, every motion";

    /// <summary>What <c>mobius info --checkpoint</c> prints.</summary>
    private static void DescribeCheckpoint(string path, Checkpoint ckpt)
    {
        var c = ckpt.Config;
        var table = new Table().Title(Markup.Escape(path)).AddColumns("", "").HideHeaders();
        void Row(string key, string value) => table.AddRow(Markup.Escape(key), Markup.Escape(value));
        Row("model", $"{ModelKind(ckpt)}{(ckpt.Topology == Topology.Spatial ? "" : " topology")} ({c.Name}{(ckpt.Topology == Topology.Parallel ? $", {c.Bridge} bridge" : "")})");
        Row("clips", $"{c.Frames} frames of {c.Height}x{c.Width}, frame noise correlation {c.FrameNoiseCorrelation.ToString("0.##", CultureInfo.InvariantCulture)}" +
            (ckpt.Topology == Topology.Spatial ? "" : $" (sampled from starting noise correlated {TextToVideo.SampleFrameNoiseFor(ckpt.Topology, c).ToString("0.##", CultureInfo.InvariantCulture)} unless --sample-frame-noise)"));
        Row("weights", $"{ckpt.Unet.Values.Sum(v => (long)v.Length) + ckpt.Text.Values.Sum(v => (long)v.Length):N0} parameters");
        Row("steps", $"{ckpt.Step:N0} (seed {ckpt.Seed})");
        Row("trained on", TrainedOn(ckpt));
        var words = ckpt.Vocabulary.Skip(Tokenizer.Specials.Count).Order(StringComparer.Ordinal).ToList();
        Row("vocabulary", $"{words.Count} words: {string.Join(", ", words)}");
        if (ckpt.TrainOptions is { } o)
        {
            string batch = o.Batch > 0 ? $"{o.Batch} clips" : $"{c.Batch} clips (the config's)";
            Row("recipe", FormattableString.Invariant($"lr {o.LearningRate:g3}{(o.CosineDecaySteps > 0 ? $" (cosine to a tenth at step {o.CosineDecaySteps})" : "")}, batch {batch}{(o.Accumulate > 1 ? $" x {o.Accumulate} accumulated" : "")}{(o.Ranks > 1 ? $" x {o.Ranks} ranks" : "")}, weight decay {o.WeightDecay:g3}, gradient clip {o.MaxGradNorm:g3}{(o.MinSnrGamma > 0 ? $", min-SNR {o.MinSnrGamma:g3}" : "")}{(o.FrozenWeights == DType.BFloat16 ? ", bf16 frozen weights" : "")}{(o.SavedActivations == DType.BFloat16 ? ", bf16 saved activations" : "")}{(o.LoopCorrectionEvery > 0 ? $", loop correction every {o.LoopCorrectionEvery} ({o.LoopCorrectionMode.ToString().ToLowerInvariant()}{(o.LoopCorrectionWarmup > 0 ? $", all exact to step {o.LoopCorrectionWarmup}" : "")})" : "")}"));
        }

        Row("resumable", ckpt.Optimizer.Count > 0 ? $"yes: optimizer state after {ckpt.OptimizerSteps:N0} steps (train --resume)" : "no: weights only");
        Row("moving average", ckpt.Ema is { } ema ? $"yes, decay {ckpt.TrainOptions?.EmaDecay.ToString("g4", CultureInfo.InvariantCulture) ?? "?"} ({ema.Count} tensors; sample draws with it)" : "no");
        if (ckpt.Extra.GetValueOrDefault(MathKey) is { } math)
        {
            Row("math", math == "fp32" ? "fp32 (strict)" : $"{math} tensor cores (train --resume on the cuda backend keeps it)");
        }

        if (ckpt.Extra.GetValueOrDefault("command") is { } command)
        {
            Row("made by", command);
        }

        AnsiConsole.Write(table);
    }

    // ---- pretrain (stage 1) -----------------------------------------------------------------------

    private static Command Pretrain()
    {
        var steps = new Option<int>("--steps") { Description = "training steps", DefaultValueFactory = _ => 2000 };
        var lr = new Option<float>("--lr") { Description = "learning rate", DefaultValueFactory = _ => 3e-4f };
        var output = new Option<string>("--out") { Description = "checkpoint to write", Required = true };
        var resume = new Option<string?>("--resume") { Description = "continue from this checkpoint" };
        var saveEvery = new Option<int>("--save-every") { Description = "also save every N steps (0: only at the end)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("pretrain", "Stage 1: train the text-to-image UNet and the text encoder on single frames of the emoji clips (or of a --data folder's GIFs, its captions' words added to the vocabulary).")
            { ConfigOption, BackendOption, MathOption, SeedOption, ThreadsOption, MemoryLimitOption, steps, lr, BatchOption, AccumulateOption, RanksOption, CollectivesOption, EmaOption, MinSnrOption, output, resume, saveEvery, CosineOption, WeightsOnlyOption, DataOption };
        cmd.SetAction(p =>
        {
            int seed = p.GetValue(SeedOption);
            var resumeFrom = p.GetValue(resume);
            var ckpt = resumeFrom is null ? null : Checkpoint.Load(resumeFrom);
            if (ckpt is not null && ckpt.Topology != Topology.Spatial)
            {
                throw new UsageException($"{resumeFrom} is a {ckpt.Topology} checkpoint; pretrain resumes text-to-image checkpoints.");
            }

            var config = ckpt?.Config ?? Configs.Get(p.GetValue(ConfigOption)!);
            var recipe = new Recipe(p, resumeFrom, ckpt);
            int ranks = CheckRanks(recipe.Pick(RanksOption, o => o.Ranks), 0);
            using var rankSet = RankSet.Create(p, ranks, RunMath(p, ckpt));
            var backend = rankSet.Backend;
            string? dataFolder = recipe.Pick(DataOption, _ => ckpt!.Extra.GetValueOrDefault(DataKey));

            // A new model on a folder knows the emoji captions' words and the folder's; a resumed one its own.
            var data = OpenData(dataFolder, config, motions: null);
            var tokenizer = ckpt is not null ? Tokenizer.FromVocabulary(ckpt.Vocabulary, config.TokenLength)
                : Tokenizer.FromCaptions(data is null ? EmojiCaptions.All() : EmojiCaptions.All().Concat(data.Entries.Select(e => e.Caption)), config.TokenLength);
            if (data is not null)
            {
                CheckData(data, tokenizer);
            }

            // A new model on a folder fits its latent codec to the folder's clips (the default is fitted to the emoji
            // clips' light backgrounds); the codec travels in the checkpoint to stage 2 and sampling.
            var train = data?.Subset(Split.Train);
            var codec = ckpt is null && train is not null ? SpaceToDepthCodec.Fit(train) : null;
            if (codec is not null)
            {
                AnsiConsole.MarkupLine(Markup.Escape($"latent codec fitted to the folder: channel scales {string.Join(" ", codec.Scales.Distinct())}, shifts {string.Join(" ", codec.Shifts)}"));
            }

            TextToVideo Load(IBackend b) => ckpt is null ? TextToVideo.Create(b, config, Topology.Spatial, seed, tokenizer, codec) : TextToVideo.Load(b, ckpt, Topology.Spatial, seed);
            using var model = Load(backend);
            rankSet.LoadReplicas(Load);
            var options = new TrainOptions
            {
                Seed = ckpt?.Seed ?? seed, WeightDecay = 0, Ranks = ranks,
                LearningRate = recipe.Pick(lr, o => o.LearningRate),
                Batch = CheckBatch(recipe.Pick(BatchOption, RecordedBatch)),
                Accumulate = CheckAccumulate(recipe.Pick(AccumulateOption, o => o.Accumulate), 0),
                EmaDecay = CheckEma(recipe.Pick(EmaOption, o => o.EmaDecay)),
                MinSnrGamma = CheckMinSnr(recipe.Pick(MinSnrOption, o => o.MinSnrGamma)),
                CosineDecaySteps = CheckCosine(recipe.Pick(CosineOption, o => o.CosineDecaySteps)),
            };
            recipe.Keep(SeedOption, options.Seed, "seed");
            recipe.Keep(ConfigOption, config.Name, "config");
            recipe.Announce();
            using var trainer = new Trainer(model, rankSet.Replicas, train ?? Comparison.Data(config, options.Seed, Split.Train), Stage.TextToImage, options, rankSet.Collectives);
            rankSet.Announce(trainer);
            if (ckpt is not null)
            {
                trainer.Resume(ckpt);
            }

            string path = CheckWritable(p.GetValue(output)!);
            var extra = new Dictionary<string, string> { ["command"] = "mobius " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1)), [MathKey] = backend.MathMode };
            if (data is not null)
            {
                AnnounceData(data, validates: false);
                extra[DataKey] = dataFolder!;
            }

            Ui.Train($"pretrain {config.Name}{(ranks > 1 ? $" on {ranks} ranks" : "")}", trainer, p.GetValue(steps), p.GetValue(saveEvery), path, extra, Cancellation);
            trainer.Save(path, extra, p.GetValue(WeightsOnlyOption));
            AnsiConsole.MarkupLine($"saved [bold]{Markup.Escape(path)}[/] after step {trainer.StepsDone}");
            return ExitCodes.Success;
        });
        return cmd;
    }

    // ---- train (stage 2) ----------------------------------------------------------------------------

    private static Command Train()
    {
        var topology = new Option<string>("--topology") { Description = "serial or parallel", DefaultValueFactory = _ => "parallel" };
        var from = new Option<string?>("--from") { Description = "the checkpoint to start from: stage 1 (text-to-image; default: the one that ships), or a text-to-video one to fine-tune (serial and loop-bridge checkpoints load into either topology)" };
        var resume = new Option<string?>("--resume") { Description = "continue a stage-2 checkpoint exactly where it stopped" };
        var steps = new Option<int>("--steps") { Description = "training steps", DefaultValueFactory = _ => 200 };
        var lr = new Option<float>("--lr") { Description = "learning rate", DefaultValueFactory = _ => 1e-4f };
        var output = new Option<string>("--out") { Description = "checkpoint to write", Required = true };
        var saveEvery = new Option<int>("--save-every") { Description = "also save every N steps (0: only at the end)", DefaultValueFactory = _ => 0 };
        var keepBest = new Option<bool>("--keep-best") { Description = "also save the weights of the lowest validation loss as OUT.best.safetensors (needs --validate-every)" };
        var log = new Option<string?>("--log") { Description = "also write every step's loss, time, gradient norm and validation loss to this CSV file (flushed each step)" };
        var cmd = new Command("train", "Stage 2: train only the temporal layers (spatial UNet and text encoder frozen) in the serial or parallel topology.")
            { topology, from, resume, steps, lr, CosineOption, BatchOption, AccumulateOption, RanksOption, CollectivesOption, EmaOption, MinSnrOption, FrameNoiseOption, output, saveEvery, BridgeOption, MotionOption, DataOption, BackendOption, MathOption, SeedOption, ThreadsOption, MemoryLimitOption, WeightsOnlyOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, ValidateEveryOption, ValidationBatchesOption, keepBest, LoopCorrectionOption, LoopCorrectionWarmupOption, LoopCorrectionMomentumOption, LoopCorrectionModeOption, log };
        cmd.SetAction(p =>
        {
            var topo = ParseTopology(p.GetValue(topology)!);
            int validateEvery = p.GetValue(ValidateEveryOption);
            int validationBatches = p.GetValue(ValidationBatchesOption);
            CheckValidation(validateEvery, validationBatches, p.GetValue(keepBest));
            float? frameNoise = FrameNoise(p);
            var resumeFrom = p.GetValue(resume);
            var ckpt = Checkpoint.Load(resumeFrom ?? p.GetValue(from) ?? DefaultCheckpoint);
            if (resumeFrom is not null && ckpt.Topology == Topology.Spatial)
            {
                throw new UsageException($"{resumeFrom} is a text-to-image checkpoint: start stage 2 from it with --from, or resume its stage 1 with mobius pretrain --resume.");
            }

            if (resumeFrom is not null && ckpt.Topology != topo)
            {
                throw new UsageException($"{resumeFrom} was trained as {ckpt.Topology}; resume it with --topology {ckpt.Topology.ToString().ToLowerInvariant()}.");
            }

            // A resumed run takes the options of the run that wrote the checkpoint, unless the command line says otherwise.
            var recipe = new Recipe(p, resumeFrom, ckpt);
            int loopCorrection = recipe.Pick(LoopCorrectionOption, o => o.LoopCorrectionEvery);
            float momentum = recipe.Pick(LoopCorrectionMomentumOption, o => o.LoopCorrectionMomentum);
            var correctionMode = ParseLoopCorrectionMode(loopCorrection, momentum, recipe.Pick(LoopCorrectionModeOption, o => o.LoopCorrectionMode.ToString().ToLowerInvariant()));
            int correctionWarmup = CheckLoopCorrectionWarmup(recipe.Pick(LoopCorrectionWarmupOption, o => o.LoopCorrectionWarmup), loopCorrection);
            string? motions = recipe.Pick(MotionOption, _ => ckpt.Extra.GetValueOrDefault(MotionsKey));
            string? dataFolder = recipe.Pick(DataOption, _ => ckpt.Extra.GetValueOrDefault(DataKey));
            var data = OpenData(dataFolder, ckpt.Config, motions);
            if (data is not null)
            {
                CheckData(data, Tokenizer.FromVocabulary(ckpt.Vocabulary, ckpt.Config.TokenLength));
            }

            var heldOut = data is not null && validateEvery > 0 ? data.Subset(Split.Validation) : null; // a folder too small to validate on fails here
            var options = new TrainOptions
            {
                Seed = resumeFrom is null ? p.GetValue(SeedOption) : ckpt.Seed,
                LearningRate = recipe.Pick(lr, o => o.LearningRate),
                Batch = CheckBatch(recipe.Pick(BatchOption, RecordedBatch)),
                Accumulate = CheckAccumulate(recipe.Pick(AccumulateOption, o => o.Accumulate), loopCorrection),
                EmaDecay = CheckEma(recipe.Pick(EmaOption, o => o.EmaDecay)),
                CosineDecaySteps = CheckCosine(recipe.Pick(CosineOption, o => o.CosineDecaySteps)),
                MinSnrGamma = CheckMinSnr(recipe.Pick(MinSnrOption, o => o.MinSnrGamma)),
                RecomputeSpatial = recipe.Pick(RecomputeOption, o => o.RecomputeSpatial),
                RecomputeTemporal = recipe.Pick(RecomputeTemporalOption, o => o.RecomputeTemporal),
                FrozenWeights = ParseStorage(recipe.Pick(FrozenWeightsOption, o => o.FrozenWeights == DType.BFloat16 ? "bf16" : "fp32"), FrozenWeightsOption.Name),
                SavedActivations = ParseStorage(recipe.Pick(SavedActivationsOption, o => o.SavedActivations == DType.BFloat16 ? "bf16" : "fp32"), SavedActivationsOption.Name),
                LoopCorrectionEvery = loopCorrection, LoopCorrectionMomentum = momentum, LoopCorrectionMode = correctionMode, LoopCorrectionWarmup = correctionWarmup,
                Ranks = CheckRanks(recipe.Pick(RanksOption, o => o.Ranks), loopCorrection),
            };
            var parsedMotions = ParseMotions(motions);
            recipe.Keep(SeedOption, options.Seed, "seed");

            using var rankSet = RankSet.Create(p, options.Ranks, RunMath(p, resumeFrom is null ? null : ckpt));
            var backend = rankSet.Backend;
            int seed = options.Seed;
            string? bridge = ParseBridge(p.GetValue(BridgeOption));
            using var model = TextToVideo.Load(backend, ckpt, topo, seed, bridge, frameNoise);
            rankSet.LoadReplicas(b => TextToVideo.Load(b, ckpt, topo, seed, bridge, frameNoise));
            using var trainer = new Trainer(model, rankSet.Replicas, data?.Subset(Split.Train) ?? Comparison.Data(ckpt.Config, seed, Split.Train, parsedMotions), Stage.TextToVideo, options, rankSet.Collectives);
            rankSet.Announce(trainer);
            if (resumeFrom is not null)
            {
                trainer.Resume(ckpt);
            }

            recipe.Announce();
            string path = CheckWritable(p.GetValue(output)!);
            var extra = new Dictionary<string, string> { ["command"] = "mobius " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1)), [MathKey] = backend.MathMode };
            if (motions is not null)
            {
                extra[MotionsKey] = motions;
            }

            if (data is not null)
            {
                AnnounceData(data, validateEvery > 0);
                extra[DataKey] = dataFolder!;
            }

            string title = $"train {topo.ToString().ToLowerInvariant()} {ckpt.Config.Name}{(options.Ranks > 1 ? $" on {options.Ranks} ranks" : "")}";
            Func<int, float>? validate = null;
            if (validateEvery > 0)
            {
                // Held-out clips of the same motions; the same batches at every validation.
                var held = heldOut ?? Comparison.Data(ckpt.Config, seed, Split.Validation, parsedMotions);
                float best = float.PositiveInfinity;
                string bestPath = Path.ChangeExtension(path, null) + ".best.safetensors";
                string batches = validationBatches.ToString(CultureInfo.InvariantCulture);
                if (resumeFrom is not null && p.GetValue(keepBest) && PreviousBest(bestPath, trainer.StepsDone, batches) is { } previous)
                {
                    // A resumed run keeps the best of the steps before it: only a lower validation loss replaces that file.
                    best = previous.Loss;
                    AnsiConsole.MarkupLine(Markup.Escape($"best so far: validation loss {previous.Loss:0.0000} after step {previous.Step} ({bestPath})"));
                }

                using (trainer.EmaWeights())
                {
                    AnsiConsole.MarkupLine($"validation loss before step {trainer.StepsDone + 1}{(trainer.HasEma ? " (EMA weights)" : "")}: {trainer.Evaluate(held, validationBatches, seed):0.0000}");
                }

                validate = step =>
                {
                    // With an EMA, the average is validated, and kept as the best weights.
                    using var ema = trainer.EmaWeights();
                    float v = trainer.Evaluate(held, validationBatches, seed);
                    if (p.GetValue(keepBest) && v < best)
                    {
                        best = v;
                        trainer.Save(bestPath, new Dictionary<string, string>(extra)
                        {
                            [BestLossKey] = v.ToString("R", CultureInfo.InvariantCulture),
                            [BestBatchesKey] = batches,
                        }, weightsOnly: true);
                    }

                    return v;
                };
            }

            using (var logWriter = p.GetValue(log) is { } logPath ? OpenLog(logPath) : null)
            {
                Ui.Train(title, trainer, p.GetValue(steps), p.GetValue(saveEvery), path, extra, Cancellation, validateEvery, validate, logWriter);
            }

            if (trainer.LoopCoefficients() is { Count: > 0 } coefficients)
            {
                var table = new Table().Title("loop correction: fitted coefficients by temporal layer").AddColumns("layer", "mean", "min", "max");
                foreach (var (layer, values) in ReportWriter.LoopCoefficientsByLayer(coefficients))
                {
                    table.AddRow(layer, $"{values.Average():0.00}", $"{values.Min():0.00}", $"{values.Max():0.00}");
                }

                AnsiConsole.Write(table);
            }

            trainer.Save(path, extra, p.GetValue(WeightsOnlyOption));
            AnsiConsole.MarkupLine($"saved [bold]{Markup.Escape(path)}[/] after step {trainer.StepsDone}");
            return ExitCodes.Success;
        });
        return cmd;
    }

    // ---- sample -----------------------------------------------------------------------------------

    private static Command Sample()
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "a checkpoint (default: the text-to-video model that ships; stage-1 checkpoints give still images)" };
        var prompt = new Option<string[]>("--prompt") { Description = "what to draw, e.g. \"a red heart moving left\" (give it again for more prompts)", Required = true };
        var count = new Option<int>("--count") { Description = "clips per prompt, each from its own noise", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "GIF to write (several clips: a grid, their captions in a .txt beside it and their frames in OUT-frames.png)", DefaultValueFactory = _ => "clip.gif" };
        var steps = new Option<int>("--steps") { Description = "DDIM steps", DefaultValueFactory = _ => 25 };
        var trained = new Option<bool>("--no-ema") { Description = "draw with the trained weights even when the checkpoint keeps their moving average (--ema)" };
        var cmd = new Command("sample", "Generate clips for prompts with DDIM and classifier-free guidance, written as an animated GIF (a grid for several), each scored for the motion its prompt names.")
            { checkpoint, prompt, count, output, steps, GuidanceOption, SampleFrameNoiseOption, trained, FrozenWeightsOption, BackendOption, MathOption, SeedOption, ThreadsOption };
        cmd.SetAction(p =>
        {
            float? startNoise = SampleFrameNoise(p);
            float guidance = Guidance(p);
            var storage = FrozenWeights(p);
            int ddim = p.GetValue(steps);
            if (ddim is < 1 or > 1000)
            {
                throw new UsageException($"--steps must be 1..1000, got {ddim}.");
            }

            int perPrompt = p.GetValue(count);
            if (perPrompt is < 1 or > 64)
            {
                throw new UsageException($"--count must be 1..64 clips per prompt, got {perPrompt}.");
            }

            var texts = p.GetValue(prompt)!;
            if (texts.FirstOrDefault(t => Tokenizer.SplitWords(t).Length == 0) is not null)
            {
                throw new UsageException("--prompt is empty; give a caption, e.g. \"a red heart moving left\" (--guidance 0 draws the model's unconditional clips).");
            }

            string path = p.GetValue(output)!;
            if (!string.Equals(Path.GetExtension(path), ".gif", StringComparison.OrdinalIgnoreCase))
            {
                throw new UsageException($"--out {path}: samples are written as animated GIFs; give a file name ending in .gif.");
            }

            CheckWritable(path, "a GIF file name");
            string? given = p.GetValue(checkpoint);
            using var backend = Backends.Create(p.GetValue(BackendOption)!, p.GetValue(ThreadsOption), 0, p.GetValue(MathOption));
            var ckpt = Checkpoint.Load(given ?? (File.Exists(DefaultVideoCheckpoint) ? DefaultVideoCheckpoint : DefaultCheckpoint));
            if (ckpt.Ema is not null && !p.GetValue(trained))
            {
                ckpt = ckpt.WithEma();
                AnsiConsole.MarkupLine(Markup.Escape($"with the weights' moving average the checkpoint keeps (EMA decay {ckpt.TrainOptions?.EmaDecay.ToString(CultureInfo.InvariantCulture) ?? "?"}; --no-ema: the trained weights)"));
            }
            using var model = TextToVideo.Load(backend, ckpt, ckpt.Topology, p.GetValue(SeedOption));
            if (storage != DType.Float32)
            {
                // Sampling trains nothing: every weight is frozen, and the linear, convolution and embedding ones can be bf16.
                model.Unet.Freeze();
                model.Text.Freeze();
                model.Unet.StoreFrozenWeights(storage);
                model.Text.StoreFrozenWeights(storage);
            }

            foreach (string text in texts)
            {
                model.Tokenizer.Encode(text, strict: true);
            }

            var captions = texts.SelectMany(t => Enumerable.Repeat(t, perPrompt)).ToList();
            float[] pixels = null!;
            AnsiConsole.Progress().Start(ctx =>
            {
                var task = ctx.AddTask(captions.Count == 1 ? "sampling" : $"sampling {captions.Count} clips", maxValue: ddim);
                pixels = model.Generate(captions, ddim, guidance, p.GetValue(SeedOption), new InlineProgress<int>(d => task.Value = d), startNoise);
            });
            var config = ckpt.Config;
            int frames = ckpt.Topology == Topology.Spatial ? 1 : config.Frames;
            int clipSize = frames * 3 * config.Height * config.Width;
            var clips = captions.Select((c, k) => new Clip(pixels[(k * clipSize)..((k + 1) * clipSize)], frames, config.Height, config.Width, c)).ToList();
            var options = new GifWriteOptions { Upscale = 4 };
            if (clips.Count == 1)
            {
                Gif.Write(path, clips[0], options);
                AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(path)}[/] ({(frames == 1 ? "a still image" : $"{frames} frames")}, {config.Height}x{config.Width}, shown x4)");
            }
            else
            {
                Gif.WriteGrid(path, clips, perPrompt, options);
                string strip = Path.ChangeExtension(path, null) + "-frames.png";
                Filmstrip.Write(strip, clips, upscale: 4);
                AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(path)}[/] ({clips.Count} {(frames == 1 ? "still images" : $"clips of {frames} frames")}, {config.Height}x{config.Width}, shown x4: a row per prompt), " +
                    $"captions in [bold]{Markup.Escape(Path.ChangeExtension(path, ".txt"))}[/], frames in [bold]{Markup.Escape(strip)}[/]");
            }

            if (frames > 1)
            {
                // The motion metric of each clip whose prompt names a motion (docs/architecture.md), and their mean.
                AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant($"starting noise correlated {model.SampleFrameNoise(startNoise):0.###} across each clip's frames")));
                var scored = new List<MotionScore>();
                for (int k = 0; k < clips.Count; k++)
                {
                    if (MotionMetric.MotionOf(clips[k]) is { } motion)
                    {
                        var score = MotionMetric.Score(clips[k], motion);
                        scored.Add(score);
                        AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                            $"{(clips.Count > 1 ? $"clip {k + 1}, " : "")}\"{clips[k].Caption}\": motion score {score.Combined:0.000} (movement matches {Kebab(motion)}: {score.Motion:0.000}, frame consistency {score.Consistency:0.000})")));
                    }
                }

                if (scored.Count > 1)
                {
                    AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                        $"mean of {scored.Count} clips: motion score {scored.Average(x => x.Combined):0.000} (movement {scored.Average(x => x.Motion):0.000}, frame consistency {scored.Average(x => x.Consistency):0.000})")));
                }
            }

            return ExitCodes.Success;
        });
        return cmd;
    }

    // ---- compare and demo -------------------------------------------------------------------------

    private static Command Compare()
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "checkpoint both start from: stage 1 (default: the one that ships for tiny; a random text-to-image model otherwise), or a serial or loop-bridge text-to-video one both fine-tune (its frame noise unless --frame-noise)" };
        var steps = new Option<int>("--steps") { Description = "training steps per topology", DefaultValueFactory = _ => 100 };
        var output = new Option<string>("--out") { Description = "folder for report.md, result.json, plots and sample GIFs", DefaultValueFactory = _ => "mobius-compare" };
        var json = new Option<bool>("--json") { Description = "print one JSON object instead of the table" };
        var samples = new Option<int>("--samples") { Description = "clips each topology samples for the GIFs and the motion score: held-out captions, each once, then again from fresh starting noise (0: none)", DefaultValueFactory = _ => 4 };
        var sampleSteps = new Option<int>("--sample-steps") { Description = "DDIM steps when sampling", DefaultValueFactory = _ => 25 };
        var lr = new Option<float>("--lr") { Description = "learning rate, the same for both topologies", DefaultValueFactory = _ => 1e-4f };
        var profile = new Option<int>("--profile") { Description = "after everything else, N more steps per topology timed by layer kind (device-synchronised; not in the step times), and on the cuda backend N more with every kernel launch and library call timed on the device", DefaultValueFactory = _ => 0 };
        var frontier = FrontierOption(0);
        var cmd = new Command("compare", "Serial against parallel: same seed, data and config, in one run; a table (or --json), report.md, plots and GIFs.")
            { ConfigOption, checkpoint, steps, SeedOption, BackendOption, MathOption, output, json, samples, sampleSteps, lr, CosineOption, BatchOption, AccumulateOption, EmaOption, MinSnrOption, FrameNoiseOption, BridgeOption, MotionOption, DataOption, ThreadsOption, MemoryLimitOption, profile, FreezeOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, ValidateEveryOption, ValidationBatchesOption, KeepBestOption, LoopCorrectionOption, LoopCorrectionWarmupOption, LoopCorrectionMomentumOption, LoopCorrectionModeOption, frontier, GuidanceOption, SampleFrameNoiseOption };
        cmd.SetAction(p => RunCompare(p.GetValue(ConfigOption)!, p.GetValue(checkpoint), p.GetValue(steps), p.GetValue(SeedOption), p.GetValue(BackendOption)!,
            p.GetValue(output)!, p.GetValue(json), p.GetValue(samples), p.GetValue(sampleSteps), p.GetValue(lr), MinSnr(p), FrameNoise(p), p.GetValue(BridgeOption), p.GetValue(MotionOption), p.GetValue(ThreadsOption), p.GetValue(MemoryLimitOption),
            p.GetValue(profile), p.GetValue(FreezeOption), p.GetValue(RecomputeOption), p.GetValue(RecomputeTemporalOption), p.GetValue(ValidateEveryOption), p.GetValue(KeepBestOption), p.GetValue(LoopCorrectionOption), p.GetValue(ValidationBatchesOption), p.GetValue(LoopCorrectionMomentumOption), p.GetValue(LoopCorrectionModeOption)!, p.GetValue(BatchOption), p.GetValue(frontier), p.GetValue(DataOption), p.GetValue(AccumulateOption), p.GetValue(EmaOption), p.GetValue(CosineOption), p.GetValue(LoopCorrectionWarmupOption), SampleFrameNoise(p), Guidance(p), FrozenWeights(p), SavedActivations(p), p.GetValue(MathOption)));
        return cmd;
    }

    private static Command Demo()
    {
        var output = new Option<string>("--out") { Description = "folder for the report, plots and GIFs", DefaultValueFactory = _ => "mobius-demo" };
        var steps = new Option<int>("--steps") { Description = "training steps per topology", DefaultValueFactory = _ => 360 };
        var lr = new Option<float?>("--lr") { Description = $"learning rate, the same for both topologies (default: {FineTuneLearningRate:g} fine-tuning a text-to-video model, {FromImageLearningRate:g} from a text-to-image one, high for a short run)" };
        var validateEvery = new Option<int>("--validate-every") { Description = "also measure both validation losses every N steps (0: before and after training only)", DefaultValueFactory = _ => 60 };
        var samples = new Option<int>("--samples") { Description = "clips each topology samples for the GIFs and the motion score: held-out captions, each once, then again from fresh starting noise", DefaultValueFactory = _ => 8 };
        var validationBatches = new Option<int>("--validation-batches") { Description = "held-out batches in each validation loss (16 here: 32 clips, enough to tell the topologies' losses apart)", DefaultValueFactory = _ => 16 };
        var frontier = FrontierOption(20);
        var checkpoint = new Option<string?>("--checkpoint") { Description = "checkpoint both start from (default: the text-to-video model that ships, models/tiny-t2v.safetensors, fine-tuned on its motion and frame noise; models/tiny-t2i.safetensors: the temporal layers trained from the identity)" };
        var cmd = new Command("demo", "The main job: serial vs parallel fine-tuning of the tiny text-to-video model that ships, on the CPU (or a GPU with --backend cuda).")
            { checkpoint, output, steps, lr, CosineOption, samples, BatchOption, AccumulateOption, EmaOption, MinSnrOption, FrameNoiseOption, BridgeOption, MotionOption, DataOption, BackendOption, MathOption, SeedOption, ThreadsOption, FreezeOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, validateEvery, validationBatches, KeepBestOption, LoopCorrectionOption, LoopCorrectionWarmupOption, LoopCorrectionMomentumOption, LoopCorrectionModeOption, frontier, GuidanceOption, SampleFrameNoiseOption };
        cmd.SetAction(p =>
        {
            string? ckpt = p.GetValue(checkpoint)
                ?? (File.Exists(DefaultVideoCheckpoint) ? DefaultVideoCheckpoint : File.Exists(DefaultCheckpoint) ? DefaultCheckpoint : null);
            if (ckpt is null)
            {
                AnsiConsole.MarkupLine("[yellow]the shipped checkpoints are missing; both topologies start from a random text-to-image model[/]");
            }
            else if (p.GetValue(checkpoint) is null && ckpt == DefaultCheckpoint)
            {
                AnsiConsole.MarkupLine("[yellow]the text-to-video checkpoint is missing; both topologies train their temporal layers from the identity[/]");
            }

            return RunCompare("tiny", ckpt, p.GetValue(steps), p.GetValue(SeedOption), p.GetValue(BackendOption)!, p.GetValue(output)!, json: false,
                samples: p.GetValue(samples), sampleSteps: 25, p.GetValue(lr), MinSnr(p), FrameNoise(p), p.GetValue(BridgeOption), p.GetValue(MotionOption), p.GetValue(ThreadsOption), 0,
                freeze: p.GetValue(FreezeOption), recomputeSpatial: p.GetValue(RecomputeOption), recomputeTemporal: p.GetValue(RecomputeTemporalOption),
                validateEvery: p.GetValue(validateEvery), keepBest: p.GetValue(KeepBestOption), loopCorrection: p.GetValue(LoopCorrectionOption),
                validationBatches: p.GetValue(validationBatches), loopCorrectionMomentum: p.GetValue(LoopCorrectionMomentumOption),
                loopCorrectionMode: p.GetValue(LoopCorrectionModeOption)!, batch: p.GetValue(BatchOption), frontier: p.GetValue(frontier), data: p.GetValue(DataOption), accumulate: p.GetValue(AccumulateOption), ema: p.GetValue(EmaOption), cosine: p.GetValue(CosineOption),
                loopCorrectionWarmup: p.GetValue(LoopCorrectionWarmupOption), sampleFrameNoise: SampleFrameNoise(p), guidance: Guidance(p), frozenWeights: FrozenWeights(p), savedActivations: SavedActivations(p), math: p.GetValue(MathOption));
        });
        return cmd;
    }

    // ---- plan -------------------------------------------------------------------------------------

    private static Command Plan()
    {
        var json = new Option<bool>("--json") { Description = "print one JSON object instead of the table" };
        var frames = new Option<int?>("--frames") { Description = "frames per clip, 2..32 (default: the config's; ms256: 16)" };
        var size = new Option<string?>("--size") { Description = "clip size in pixels, HxW or one number for a square, e.g. 128 (default: the config's; ms256: 64, a 32x32 latent)" };
        var byOp = new Option<bool>("--by-op") { Description = "also print what each op keeps for backward, by layer kind, in both topologies (in --json always: saved_by_op)" };
        var budget = new Option<long>("--budget-mib") { Description = "also find each topology's largest batch whose planned peak, in allocator blocks, fits in this many MiB (the engine's tensors: leave room for the CUDA context and libraries), at the recompute policy asked for (0: no search)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("plan", "The memory of a training step of both topologies, planned without a device: a dry run on the meta backend, the same allocations as a real step, nothing computed.")
            { ConfigOption, BatchOption, frames, size, budget, EmaOption, BridgeOption, FreezeOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, LoopCorrectionOption, LoopCorrectionModeOption, byOp, json };
        cmd.SetAction(p =>
        {
            var config = Configs.Get(p.GetValue(ConfigOption)!);
            string? bridge = ParseBridge(p.GetValue(BridgeOption));
            config = Reshape(config with { Bridge = bridge ?? ModelConfig.DefaultBridge }, p.GetValue(frames), p.GetValue(size));
            var options = new TrainOptions
            {
                Batch = CheckBatch(p.GetValue(BatchOption)),
                EmaDecay = CheckEma(p.GetValue(EmaOption)),
                FrozenTemporal = ParseFreeze(p.GetValue(FreezeOption), config, bridge),
                RecomputeSpatial = p.GetValue(RecomputeOption),
                RecomputeTemporal = p.GetValue(RecomputeTemporalOption),
                FrozenWeights = FrozenWeights(p),
                SavedActivations = SavedActivations(p),
                LoopCorrectionEvery = CheckLoopCorrection(p.GetValue(LoopCorrectionOption)),
                LoopCorrectionMode = ParseLoopCorrectionMode(p.GetValue(LoopCorrectionOption), momentum: null, p.GetValue(LoopCorrectionModeOption)!),
            };
            long budgetMib = p.GetValue(budget);
            if (budgetMib < 0)
            {
                throw new UsageException($"--budget-mib must be 0 (no search) or more, got {budgetMib}.");
            }

            var plan = MemoryPlan.Plan(config, options);
            var points = MemoryPlan.OperatingPoints(config, options);
            LargestBatchPlan? largest = null;
            if (budgetMib > 0)
            {
                var (serialBatch, parallelBatch) = MemoryPlan.LargestBatch(config, options, budgetMib * 1048576);
                largest = new LargestBatchPlan(budgetMib * 1048576, serialBatch, parallelBatch);
            }

            if (p.GetValue(json))
            {
                Console.WriteLine((plan with { OperatingPoints = points, LargestBatch = largest }).ToJson());
                return ExitCodes.Success;
            }

            var recompute = string.Join(" and ", new[] { options.RecomputeSpatial ? "spatial" : null, options.RecomputeTemporal ? "temporal" : null }.OfType<string>());
            var t = new Table().Title($"[bold]planned memory of a training step[/]: {Markup.Escape(config.Name)}, {config.Frames} frames of {config.Height}x{config.Width}, batch {plan.Batch}, {Markup.Escape(config.Bridge)} bridge" +
                (recompute.Length > 0 ? $", recomputing {recompute} layers" : "") + (options.FrozenWeights == DType.BFloat16 ? ", bf16 frozen weights" : "") + (options.SavedActivations == DType.BFloat16 ? ", bf16 saved activations" : ""));
            t.AddColumn("").AddColumn("serial", c => c.RightAligned()).AddColumn("parallel", c => c.RightAligned()).AddColumn("parallel / serial", c => c.RightAligned());
            t.AddRow("peak", Mb(plan.Serial.PeakBytes), Mb(plan.Parallel.PeakBytes), plan.PeakRatio.ToString("0.00", CultureInfo.InvariantCulture));
            t.AddRow("peak in allocator blocks", Mb(plan.Serial.PeakBlockBytes), Mb(plan.Parallel.PeakBlockBytes), "");
            t.AddRow("saved for backward", Mb(plan.Serial.SavedActivationBytes), Mb(plan.Parallel.SavedActivationBytes), plan.SavedRatio.ToString("0.00", CultureInfo.InvariantCulture));
            foreach (var category in plan.Serial.AtPeak.Keys.Union(plan.Parallel.AtPeak.Keys))
            {
                t.AddRow($"  at peak: {category}", Mb(plan.Serial.AtPeak.GetValueOrDefault(category)), Mb(plan.Parallel.AtPeak.GetValueOrDefault(category)), "");
            }

            t.AddRow("trainable parameters", plan.Serial.TrainableParams.ToString("N0", CultureInfo.InvariantCulture), plan.Parallel.TrainableParams.ToString("N0", CultureInfo.InvariantCulture), "");
            AnsiConsole.Write(t);
            if (p.GetValue(byOp))
            {
                Ui.PrintSavedByOp(plan.Serial.SavedByOp, plan.Parallel.SavedByOp);
            }

            Ui.PrintOperatingPoints(points, MemoryPlan.PolicyName(options.RecomputeSpatial, options.RecomputeTemporal), "the one above");
            if (largest is { } l)
            {
                string Clips(int n) => n switch { 0 => "not one clip", 1 => "1 clip", _ => $"{n} clips" };
                AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                    $"largest batch within {budgetMib} MiB{(recompute.Length > 0 ? $", recomputing {recompute} layers" : "")}: serial {Clips(l.Serial)}, parallel {Clips(l.Parallel)}") +
                    (l.Serial > 0 ? FormattableString.Invariant($" ({(double)l.Parallel / l.Serial:0.##} times serial's)") : "")));
            }

            AnsiConsole.MarkupLine("[grey]the engine's own tensors only: a GPU adds its libraries' workspace, the allocator's cache and the CUDA context[/]");
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary><paramref name="config"/> with <c>--frames</c> and <c>--size</c> (HxW, or N for N x N) when given, checked as a whole.</summary>
    private static ModelConfig Reshape(ModelConfig config, int? frames, string? size)
    {
        if (frames is { } f)
        {
            if (f is < 2 or > 32)
            {
                throw new UsageException($"--frames must be 2..32 (two frames at least to move between; the temporal attention kernel takes 32), got {f}.");
            }

            config = config with { Frames = f };
        }

        if (size is not null)
        {
            int[] sides = [.. size.Split('x', 'X').Select(x => int.TryParse(x, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v : 0)];
            if (sides.Length is not (1 or 2) || sides.Any(v => v <= 0))
            {
                throw new UsageException($"--size must be HxW or one number of pixels, e.g. 64x96 or 128, got '{size}'.");
            }

            config = config with { Height = sides[0], Width = sides[^1] };
        }

        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--frames/--size: {e.Message}");
        }

        return config;
    }

    private static int RunCompare(string configName, string? checkpoint, int steps, int seed, string backend, string outDir, bool json, int samples, int sampleSteps,
        float? learningRate, float minSnrGamma, float? frameNoise, string? bridge, string? motion, int threads, long memoryLimitMb, int profileSteps = 0,
        string? freeze = null, bool recomputeSpatial = false, bool recomputeTemporal = false, int validateEvery = 0, bool keepBest = false, int loopCorrection = 0, int validationBatches = 4, float loopCorrectionMomentum = 0.9f, string loopCorrectionMode = "scale", int? batch = null, int frontier = 0, string? data = null, int accumulate = 1, float ema = 0f, int cosine = 0, int loopCorrectionWarmup = 0, float? sampleFrameNoise = null, float guidance = 4f, DType frozenWeights = DType.Float32, DType savedActivations = DType.Float32, string? math = null)
    {
        if (frontier < 0)
        {
            throw new UsageException($"--frontier must be 0 or more steps, got {frontier}.");
        }

        if (steps < 1)
        {
            throw new UsageException($"--steps must be at least 1, got {steps}.");
        }

        CheckValidation(validateEvery, validationBatches, keepBest);
        var correctionMode = ParseLoopCorrectionMode(loopCorrection, loopCorrectionMomentum, loopCorrectionMode);

        if (samples < 0)
        {
            throw new UsageException($"--samples must be 0 or more clips, got {samples}.");
        }

        if (profileSteps < 0)
        {
            throw new UsageException($"--profile must be 0 or more steps, got {profileSteps}.");
        }

        if (learningRate is { } given && !(given > 0 && given < 1))
        {
            throw new UsageException($"--lr must be in (0, 1), got {given}.");
        }

        var config = Configs.Get(configName);
        checkpoint ??= config.Name == "tiny" && File.Exists(DefaultCheckpoint) ? DefaultCheckpoint : null;
        var video = checkpoint is null ? null : Checkpoint.Load(checkpoint) is { Topology: not Topology.Spatial } c ? c : null;

        // A text-to-video model is fine-tuned on the motions it was trained on, unless told otherwise; with no
        // rate given (the demo), at the fine-tuning rate, or the short run's from a text-to-image model.
        RefuseMotionWithData(data, motion);
        motion ??= data is null ? video?.Extra.GetValueOrDefault(MotionsKey) : null;
        float lr = learningRate ?? (video is not null ? FineTuneLearningRate : FromImageLearningRate);

        Backends.Create(backend, threads, memoryLimitMb, math).Dispose(); // fail early and clearly
        var options = new ComparisonOptions
        {
            Config = config,
            Checkpoint = checkpoint,
            Steps = steps,
            Seed = seed,
            SamplePrompts = samples,
            SampleSteps = sampleSteps,
            SampleFrameNoise = sampleFrameNoise,
            Guidance = guidance,
            Train = new TrainOptions { Seed = seed, LearningRate = lr, Batch = CheckBatch(batch), Accumulate = CheckAccumulate(accumulate, loopCorrection), EmaDecay = CheckEma(ema), CosineDecaySteps = CheckCosine(cosine), MinSnrGamma = minSnrGamma, FrozenTemporal = ParseFreeze(freeze, config, bridge),
                RecomputeSpatial = recomputeSpatial, RecomputeTemporal = recomputeTemporal, LoopCorrectionEvery = loopCorrection, LoopCorrectionMomentum = loopCorrectionMomentum, LoopCorrectionMode = correctionMode,
                LoopCorrectionWarmup = CheckLoopCorrectionWarmup(loopCorrectionWarmup, loopCorrection), FrozenWeights = frozenWeights, SavedActivations = savedActivations },
            Bridge = ParseBridge(bridge) ?? ModelConfig.DefaultBridge,
            FrameNoiseCorrelation = frameNoise,
            Motions = ParseMotions(motion),
            DataFolder = data,
            BackendFactory = () => Backends.Create(backend, threads, memoryLimitMb, math),
            ProfileSteps = profileSteps,
            FrontierSteps = frontier,
            FrontierTogether = backend == "cpu",
            ValidateEvery = validateEvery,
            ValidationBatches = validationBatches,
            KeepBest = keepBest,
            StopTraining = Stop,
        };
        try
        {
            Directory.CreateDirectory(outDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot create the output folder {outDir}: {e.Message}");
        }

        var writer = new ReportWriter(outDir);
        StopsGracefully = true;
        ComparisonResult result;
        try
        {
            result = Ui.Compare(options, json, writer.WriteSamples, Cancellation);
        }
        finally
        {
            StopsGracefully = false;
        }

        writer.Write(result, options);
        if (json)
        {
            Console.WriteLine(result.ToJson());
        }
        else
        {
            Ui.PrintComparison(result);
            if (ReportWriter.RepeatedPrompts(result.Prompts) is { } repeated)
            {
                AnsiConsole.MarkupLine($"[grey]{Markup.Escape(repeated)}[/]");
            }

            AnsiConsole.MarkupLine($"report: [bold]{Markup.Escape(Path.Combine(outDir, "report.md"))}[/]");
            if (result.Prompts.Count > 0)
            {
                AnsiConsole.MarkupLine($"samples: [bold]{Markup.Escape(Path.Combine(outDir, "serial-samples.gif"))}[/] and [bold]{Markup.Escape(Path.Combine(outDir, "parallel-samples.gif"))}[/] " +
                    $"(a clip per caption), the frames side by side in [bold]{Markup.Escape(Path.Combine(outDir, "serial-frames.png"))}[/] and [bold]parallel-frames.png[/]");
            }
        }

        if (result.Steps < result.StepsRequested)
        {
            // Everything is written, but over fewer steps than asked for: a script must not take it for the full run.
            Console.Error.WriteLine($"mobius: stopped early: {result.Steps} of {result.StepsRequested} steps; the report covers those.");
            return ExitCodes.Cancelled;
        }

        return ExitCodes.Success;
    }

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

    /// <summary><c>--ranks</c>, checked: at least 1, and 1 beside <c>--loop-correction</c>.</summary>
    private static int CheckRanks(int ranks, int loopCorrection)
    {
        if (ranks < 1)
        {
            throw new UsageException($"--ranks must be at least 1, got {ranks}.");
        }

        if (ranks > 1 && loopCorrection > 0)
        {
            throw new UsageException("--ranks does not combine with --loop-correction, whose exact steps recompute one batch on one model.");
        }

        return ranks;
    }

    /// <summary>
    /// The backends of a run, one per rank (<c>--ranks</c>), each with its own <c>--memory-limit-mb</c>: on the cpu
    /// backend each with its share of <c>--threads</c> (at least one), on the cuda backend rank r on device r mod the
    /// device count; how the ranks average their gradients (<c>--collectives</c>); and, once loaded, the replicas of
    /// rank 0's model. Disposes the replicas, the collectives, then the backends.
    /// </summary>
    private sealed class RankSet : IDisposable
    {
        private readonly List<IBackend> _backends = [];
        private readonly List<TextToVideo> _replicas = [];

        /// <summary>Rank 0's backend.</summary>
        public IBackend Backend => _backends[0];

        /// <summary>The models of ranks 1 and up (none until <see cref="LoadReplicas"/>).</summary>
        public IReadOnlyList<TextToVideo> Replicas => _replicas;

        /// <summary>How the ranks average their gradients (null with one rank).</summary>
        public ICollectives? Collectives { get; private set; }

        public static RankSet Create(ParseResult p, int ranks, string? math)
        {
            int threads = p.GetValue(ThreadsOption);
            if (ranks > 1)
            {
                threads = Math.Max(1, (threads > 0 ? threads : Environment.ProcessorCount) / ranks);
            }

            string name = p.GetValue(BackendOption)!;
            bool cuda = name.Equals("cuda", StringComparison.OrdinalIgnoreCase);
            string how = p.GetValue(CollectivesOption)!.ToLowerInvariant();
            if (how is not ("auto" or "host" or "nccl"))
            {
                throw new UsageException($"--collectives must be auto, nccl or host, got '{how}'.");
            }

            if (how == "nccl" && !cuda)
            {
                throw new UsageException("--collectives nccl reduces device memory: it needs --backend cuda (the cpu backend's ranks average through host memory).");
            }

            int devices = ranks > 1 && cuda ? Math.Max(1, Backends.CudaDeviceCount()) : 1;
            var set = new RankSet();
            try
            {
                for (int r = 0; r < ranks; r++)
                {
                    set._backends.Add(Backends.Create(name, threads, p.GetValue(MemoryLimitOption), math, ordinal: r % devices));
                }

                if (ranks > 1)
                {
                    bool nccl = how == "nccl" || (how == "auto" && cuda && devices >= ranks && NcclCollectives.Available(out _));
                    set.Collectives = nccl ? OpenNccl(set._backends) : new HostCollectives();
                }
            }
            catch
            {
                set.Dispose();
                throw;
            }

            return set;
        }

        private static NcclCollectives OpenNccl(List<IBackend> backends)
        {
            try
            {
                return new NcclCollectives(backends.Cast<CudaBackend>().ToList());
            }
            catch (Exception e) when (e is DllNotFoundException or CudaException)
            {
                throw new BackendUnavailableException($"--collectives nccl: {e.Message}", e);
            }
        }

        /// <summary>With more than one rank, says where they run and how their gradients are averaged.</summary>
        public void Announce(Trainer trainer)
        {
            if (_backends.Count < 2)
            {
                return;
            }

            double mib = trainer.TrainableParameters * 4 / 1048576.0;
            string how = Collectives is HostCollectives ? "through host memory" : $"with {Collectives!.Name} on the devices";
            AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                $"data parallel: {_backends.Count} ranks on {string.Join(", ", _backends.Select(b => b.DeviceName).Distinct())}; each step averages {mib:0.0} MiB of gradients per rank {how}")));
        }

        /// <summary>Loads a model on every backend but rank 0's.</summary>
        public void LoadReplicas(Func<IBackend, TextToVideo> load)
        {
            foreach (var backend in _backends.Skip(1 + _replicas.Count))
            {
                _replicas.Add(load(backend));
            }
        }

        public void Dispose()
        {
            _replicas.ForEach(m => m.Dispose());
            _replicas.Clear();
            (Collectives as IDisposable)?.Dispose();
            Collectives = null;
            _backends.ForEach(b => b.Dispose());
            _backends.Clear();
        }
    }

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

    private static DType FrozenWeights(ParseResult p) => ParseStorage(p.GetValue(FrozenWeightsOption)!, FrozenWeightsOption.Name);

    private static DType SavedActivations(ParseResult p) => ParseStorage(p.GetValue(SavedActivationsOption)!, SavedActivationsOption.Name);

    private static DType ParseStorage(string value, string option) => value switch
    {
        "fp32" => DType.Float32,
        "bf16" => DType.BFloat16,
        _ => throw new UsageException($"{option} must be fp32 or bf16, got '{value}'."),
    };

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
