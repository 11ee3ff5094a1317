using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Distributed;
using Mobius.Engine.NN;
using Mobius.Engine.Optim;
using Mobius.Model.Diffusion;

namespace Mobius.Model.Training;

/// <summary>Which of the two training stages a trainer runs.</summary>
public enum Stage
{
    /// <summary>Stage 1: the text-to-image UNet and the text encoder on single frames.</summary>
    TextToImage,

    /// <summary>Stage 2: spatial layers and text encoder frozen; temporal layers (and bridges) on clips.</summary>
    TextToVideo,
}

/// <summary>Hyper-parameters of a training run.</summary>
public sealed record TrainOptions
{
    /// <summary>Seed of the data order, timesteps, noise and caption dropout.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>AdamW learning rate.</summary>
    public float LearningRate { get; init; } = 1e-4f;

    /// <summary>
    /// Clips per training step (0, the default: the model config's <see cref="ModelConfig.Batch"/>). Stage 1
    /// takes that many clips' worth of single frames (Batch x Frames). Validation (<see cref="Trainer.Evaluate"/>)
    /// keeps the config's batch, so validation losses of runs with different batches are over the same clips.
    /// </summary>
    public int Batch { get; init; }

    /// <summary>The clips per step these options give a model of <paramref name="config"/>: <see cref="Batch"/>, or the config's when that is 0.</summary>
    public int BatchFor(ModelConfig config) => Batch > 0 ? Batch : config.Batch;

    /// <summary>
    /// Gradient accumulation: a step runs forward and backward on this many batches of <see cref="Batch"/> clips one
    /// after another, sums their gradients (each batch's mean loss weighted 1 / Accumulate) and takes one optimizer
    /// step. The same update as one batch of Accumulate x Batch clips, at the activation memory of one batch of
    /// Batch (1, the default: no accumulation). Step k's batches are those a run without accumulation would take at
    /// steps (k - 1) x Accumulate + 1 to k x Accumulate. Not with <see cref="LoopCorrectionEvery"/>.
    /// </summary>
    public int Accumulate { get; init; } = 1;

    /// <summary>
    /// Data parallel: the ranks a step's clips are split among, each a replica of the model on its own backend
    /// running forward and backward at the same time as the others (<see cref="Trainer(TextToVideo, IReadOnlyList{TextToVideo}, IClipSource, Stage, TrainOptions, ICollectives?)"/>);
    /// their gradients are averaged before one optimizer step on every rank. A step takes Ranks x Accumulate batches
    /// of <see cref="Batch"/> clips: those of steps (k - 1) x Ranks x Accumulate + 1 to k x Ranks x Accumulate of a
    /// run with neither, rank r the r-th Accumulate of them. So a run on R ranks takes the update a run on one rank
    /// accumulating R times as many batches takes, up to the order of floating-point sums. 1 (the default): one
    /// model. Not with <see cref="LoopCorrectionEvery"/>.
    /// </summary>
    public int Ranks { get; init; } = 1;

    /// <summary>
    /// When positive, the trainer keeps an exponential moving average of the trainable weights, updated after every
    /// optimizer step with decay min(EmaDecay, (1 + t) / (10 + t)) at step t (the usual warm-up, so early steps are
    /// not averaged with the untrained start), on the device as optimizer state. <see cref="Trainer.EmaWeights"/>
    /// puts it in place for validation and sampling; checkpoints keep it (tensors under "ema."), and
    /// <c>mobius sample</c> draws with it. 0 (the default): off. Typical: 0.99 to 0.9999.
    /// </summary>
    public float EmaDecay { get; init; }

    /// <summary>AdamW decoupled weight decay.</summary>
    public float WeightDecay { get; init; } = 0.01f;

    /// <summary>Global gradient-norm clip (0: off).</summary>
    public float MaxGradNorm { get; init; } = 1f;

    /// <summary>Probability of replacing a caption with the empty caption (for classifier-free guidance).</summary>
    public float CaptionDropout { get; init; } = 0.1f;

    /// <summary>
    /// Min-SNR-gamma loss weighting (Hang et al., 2023): each item's noise MSE is weighted by
    /// min(SNR_t, gamma) / SNR_t, so the nearly clean timesteps, whose noise error is largest, stop
    /// dominating the gradient. 0 (the default) is the plain MSE. The reported training loss and
    /// <see cref="Trainer.Evaluate"/> stay the plain MSE, comparable across settings.
    /// </summary>
    public float MinSnrGamma { get; init; } = DefaultMinSnrGamma;

    /// <summary>
    /// The default <see cref="MinSnrGamma"/>: 0, the plain MSE. Gamma 5 helps the serial topology and hurts
    /// the loop bridge, whose straight-through gradient is least faithful at the noisy timesteps it weights
    /// up (benchmarks/results/2026-11-26-motion-training-settings.md); a comparison trains both alike.
    /// </summary>
    public const float DefaultMinSnrGamma = 0f;

    /// <summary>
    /// Stage 2 only: temporal layers kept at their initial values, as parameter-name prefixes ("down.2.", "mid.");
    /// null or empty trains them all. See <see cref="UNet3D.FreezeTemporal"/>.
    /// </summary>
    public IReadOnlyList<string>? FrozenTemporal { get; init; }

    /// <summary>
    /// The spatial layers keep only their inputs and run again in backward (<see cref="UNet3D.RecomputeSpatial"/>):
    /// the same gradients with fewer saved activations, for one more spatial forward per step. In stage 2 it
    /// matters to the serial topology only; the parallel one keeps no spatial activation.
    /// </summary>
    public bool RecomputeSpatial { get; init; }

    /// <summary>
    /// Stage 2: the temporal layers keep only their inputs and run again in backward (<see cref="UNet3D.RecomputeTemporal"/>),
    /// in either topology: the same gradients, most of the temporal activations gone, one more temporal forward per step.
    /// </summary>
    public bool RecomputeTemporal { get; init; }

    /// <summary>
    /// Stage 2: the element type the frozen weights of linear, convolution and embedding layers are kept in (the
    /// text-to-image UNet's, the text encoder's, and those of temporal layers kept frozen). <see cref="DType.BFloat16"/>
    /// halves their bytes, each rounded to the nearest bf16 when training starts, and every op still computes in
    /// fp32, widening one layer's weight while it runs (<see cref="Engine.NN.Module.StoreFrozenWeights"/>). It applies
    /// to both topologies alike; norms, biases and everything trained stay fp32. Default fp32.
    /// </summary>
    public DType FrozenWeights { get; init; } = DType.Float32;

    /// <summary>
    /// The element type of the activations a training step keeps for backward where the op allows it
    /// (<see cref="Tape.SavedActivations"/>): <see cref="DType.BFloat16"/> keeps about 0.6 of the bytes, both topologies
    /// alike. Forward and the loss are unchanged; the gradients are computed from the kept activations rounded to
    /// bf16, so they differ from fp32's by about bf16's precision (2^-9 relative per value). Default fp32.
    /// </summary>
    public DType SavedActivations { get; init; } = DType.Float32;

    /// <summary>
    /// Experimental, stage 2, parallel topology with the loop bridge only: every this many steps (0: never)
    /// the step also computes serial's exact gradient on the same batch (the loop's skipped spatial layers
    /// put back on the tape and recomputed in backward, so the step peaks near a recomputing serial's), takes
    /// the exact step, and corrects the steps in between by what the exact steps measured
    /// (<see cref="LoopCorrectionMode"/>; kept in the trainer's checkpoints, <see cref="Checkpoint.LoopCorrection"/>). <see cref="LoopCorrectionMode.Mean"/>
    /// folds the difference between the loop's and the exact gradient into a running mean (exponential with
    /// <see cref="LoopCorrectionMomentum"/>, debiased as Adam's moments are) and subtracts it from the loop's
    /// gradient: a control variate for the straight-through estimate's bias, kept as one more gradient-sized
    /// buffer (optimizer state). <see cref="LoopCorrectionMode.Scale"/> scales the loop's gradient per tensor
    /// by its fitted coefficient on the exact one. Other topologies ignore it.
    /// </summary>
    public int LoopCorrectionEvery { get; init; }

    /// <summary>
    /// With <see cref="LoopCorrectionEvery"/>: the first this many steps are all exact (serial's gradient), where
    /// the loss falls fastest and the loop's gradient departs from serial's most; the correction's steps follow.
    /// 0: none beyond the first.
    /// </summary>
    public int LoopCorrectionWarmup { get; init; }

    /// <summary>Weight of the old mean when <see cref="LoopCorrectionEvery"/> folds in a new difference.</summary>
    public float LoopCorrectionMomentum { get; init; } = 0.9f;

    /// <summary>How <see cref="LoopCorrectionEvery"/>'s exact steps correct the steps between (default: scale).</summary>
    public LoopCorrectionMode LoopCorrectionMode { get; init; } = LoopCorrectionMode.Scale;

    /// <summary>
    /// <see cref="LoopCorrectionMode.Scale"/> fits each tensor's coefficient on at most this many of its
    /// elements (every k-th, k = ceil(n / this)): the exact step then holds a sampled copy of the loop's
    /// gradient instead of a whole one (2 GiB at ms256). Tensors up to this size are fitted whole.
    /// </summary>
    internal int LoopScaleSamples { get; init; } = 65536;

    /// <summary>Raise instead of stepping when the loss is NaN or infinite.</summary>
    public bool CheckFinite { get; init; } = true;

    /// <summary>
    /// When positive, the learning rate follows a cosine from <see cref="LearningRate"/> at step 1 down to
    /// a tenth of it at this step (and stays there); 0 keeps it constant.
    /// </summary>
    public int CosineDecaySteps { get; init; }

    /// <summary>
    /// These options as JSON (snake_case names, floats round-tripping exactly): what a trainer's checkpoint
    /// keeps so that a resumed run continues with the same recipe (<see cref="Checkpoint.TrainOptions"/>).
    /// </summary>
    public string ToJson() => JsonSerializer.Serialize(new Recorded(Seed, LearningRate, Batch, WeightDecay, MaxGradNorm, CaptionDropout, MinSnrGamma,
        FrozenTemporal?.ToArray(), RecomputeSpatial, RecomputeTemporal, LoopCorrectionEvery, LoopCorrectionMomentum,
        LoopCorrectionMode.ToString().ToLowerInvariant(), LoopScaleSamples, CheckFinite, CosineDecaySteps, Accumulate, EmaDecay, LoopCorrectionWarmup,
        FrozenWeights == DType.Float32 ? null : FrozenWeights.Name(), SavedActivations == DType.Float32 ? null : SavedActivations.Name(),
        Ranks == 1 ? null : Ranks));

    /// <summary>Reads <see cref="ToJson"/>'s output; a field it does not hold keeps its default.</summary>
    /// <exception cref="FormatException">The text is not such JSON, or names an unknown loop-correction mode.</exception>
    public static TrainOptions FromJson(string json)
    {
        Recorded r;
        try
        {
            r = JsonSerializer.Deserialize<Recorded>(json) ?? throw new FormatException("train options are null.");
        }
        catch (JsonException e)
        {
            throw new FormatException($"train options are not valid JSON: {e.Message}", e);
        }

        var defaults = new TrainOptions();
        return new TrainOptions
        {
            Seed = r.Seed ?? defaults.Seed,
            LearningRate = r.LearningRate ?? defaults.LearningRate,
            Batch = r.Batch ?? defaults.Batch,
            WeightDecay = r.WeightDecay ?? defaults.WeightDecay,
            MaxGradNorm = r.MaxGradNorm ?? defaults.MaxGradNorm,
            CaptionDropout = r.CaptionDropout ?? defaults.CaptionDropout,
            MinSnrGamma = r.MinSnrGamma ?? defaults.MinSnrGamma,
            FrozenTemporal = r.FrozenTemporal ?? defaults.FrozenTemporal,
            RecomputeSpatial = r.RecomputeSpatial ?? defaults.RecomputeSpatial,
            RecomputeTemporal = r.RecomputeTemporal ?? defaults.RecomputeTemporal,
            LoopCorrectionEvery = r.LoopCorrectionEvery ?? defaults.LoopCorrectionEvery,
            LoopCorrectionMomentum = r.LoopCorrectionMomentum ?? defaults.LoopCorrectionMomentum,
            LoopCorrectionMode = r.LoopCorrectionMode is null ? defaults.LoopCorrectionMode
                : Enum.TryParse<LoopCorrectionMode>(r.LoopCorrectionMode, ignoreCase: true, out var mode) ? mode
                : throw new FormatException($"unknown loop-correction mode '{r.LoopCorrectionMode}'."),
            LoopScaleSamples = r.LoopScaleSamples ?? defaults.LoopScaleSamples,
            CheckFinite = r.CheckFinite ?? defaults.CheckFinite,
            CosineDecaySteps = r.CosineDecaySteps ?? defaults.CosineDecaySteps,
            Accumulate = r.Accumulate ?? defaults.Accumulate,
            EmaDecay = r.EmaDecay ?? defaults.EmaDecay,
            LoopCorrectionWarmup = r.LoopCorrectionWarmup ?? defaults.LoopCorrectionWarmup,
            FrozenWeights = ParseDType(r.FrozenWeights, "frozen-weight"),
            SavedActivations = ParseDType(r.SavedActivations, "saved-activation"),
            Ranks = r.Ranks ?? defaults.Ranks,
        };
    }

    private static DType ParseDType(string? name, string what) => name switch
    {
        null or "float32" => DType.Float32,
        "bfloat16" => DType.BFloat16,
        _ => throw new FormatException($"unknown {what} type '{name}'."),
    };

    /// <summary>The JSON form of the options (nullable, so that a missing field keeps its default).</summary>
    private sealed record Recorded(
        [property: JsonPropertyName("seed")] int? Seed,
        [property: JsonPropertyName("learning_rate")] float? LearningRate,
        [property: JsonPropertyName("batch")] int? Batch,
        [property: JsonPropertyName("weight_decay")] float? WeightDecay,
        [property: JsonPropertyName("max_grad_norm")] float? MaxGradNorm,
        [property: JsonPropertyName("caption_dropout")] float? CaptionDropout,
        [property: JsonPropertyName("min_snr_gamma")] float? MinSnrGamma,
        [property: JsonPropertyName("frozen_temporal")] string[]? FrozenTemporal,
        [property: JsonPropertyName("recompute_spatial")] bool? RecomputeSpatial,
        [property: JsonPropertyName("recompute_temporal")] bool? RecomputeTemporal,
        [property: JsonPropertyName("loop_correction_every")] int? LoopCorrectionEvery,
        [property: JsonPropertyName("loop_correction_momentum")] float? LoopCorrectionMomentum,
        [property: JsonPropertyName("loop_correction_mode")] string? LoopCorrectionMode,
        [property: JsonPropertyName("loop_scale_samples")] int? LoopScaleSamples,
        [property: JsonPropertyName("check_finite")] bool? CheckFinite,
        [property: JsonPropertyName("cosine_decay_steps")] int? CosineDecaySteps,
        [property: JsonPropertyName("accumulate")] int? Accumulate,
        [property: JsonPropertyName("ema_decay")] float? EmaDecay,
        [property: JsonPropertyName("loop_correction_warmup")] int? LoopCorrectionWarmup,
        [property: JsonPropertyName("frozen_weights")] string? FrozenWeights,
        [property: JsonPropertyName("saved_activations")] string? SavedActivations,
        [property: JsonPropertyName("ranks")] int? Ranks);

    /// <summary>The learning rate of 1-based step <paramref name="step"/>.</summary>
    public float LearningRateAt(int step)
    {
        if (CosineDecaySteps <= 0)
        {
            return LearningRate;
        }

        double progress = Math.Min(1.0, (step - 1) / (double)Math.Max(1, CosineDecaySteps - 1));
        return (float)(LearningRate * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * progress))));
    }
}

/// <summary>How the loop bridge's exact steps (<see cref="TrainOptions.LoopCorrectionEvery"/>) correct the steps between.</summary>
public enum LoopCorrectionMode
{
    /// <summary>
    /// Subtract the running mean of loop minus exact from the loop's gradient: one more gradient-sized buffer
    /// (optimizer state).
    /// </summary>
    Mean,

    /// <summary>
    /// Scale the loop's gradient, per parameter tensor, by its fitted coefficient on serial's exact one:
    /// <c>c = mean&lt;exact, loop&gt; / mean&lt;loop, loop&gt;</c> over the exact steps (running means with
    /// <see cref="TrainOptions.LoopCorrectionMomentum"/>), clamped to [0, 1]. Where the loop's gradient is
    /// serial's (next to the output) c stays near 1; where it is nearly uncorrelated with serial's (the
    /// lowest-resolution blocks) c falls towards 0 and those layers learn from the exact steps alone instead
    /// of from noise. Two numbers per tensor, no buffer.
    /// </summary>
    Scale,
}

/// <summary>What one training step did and cost.</summary>
/// <param name="Step">1-based step number.</param>
/// <param name="Loss">Training loss (MSE of the predicted noise).</param>
/// <param name="Milliseconds">Wall time of upload, forward, backward and optimiser step, device-synchronised.</param>
/// <param name="Memory">Backend memory statistics; the peak is the step's own.</param>
/// <param name="SavedActivationBytes">Most bytes the tape held for backward during the step.</param>
/// <param name="SavedByKind">Those bytes by layer kind, at the start of backward.</param>
/// <param name="GradNorm">Global gradient norm before clipping (NaN when clipping is off).</param>
public sealed record StepStats(int Step, float Loss, double Milliseconds, MemorySnapshot Memory, long SavedActivationBytes,
    IReadOnlyDictionary<string, long> SavedByKind, float GradNorm)
{
    /// <summary>
    /// The same bytes by layer kind and op, largest first (<see cref="Tape.StatsByOp"/>); with gradient accumulation,
    /// those of the micro-batch that kept the most.
    /// </summary>
    public IReadOnlyList<TapeOpStats> SavedByOp { get; init; } = [];
}

/// <summary>
/// Trains a <see cref="TextToVideo"/> model: DDPM epsilon prediction with MSE, AdamW on trainable
/// parameters only, gradient clipping, caption dropout. Step k's batch (clips, timesteps, noise,
/// dropped captions) depends only on the seed and k, so a resumed run continues exactly.
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly TextToVideo _model;
    private readonly IClipSource _data;
    private readonly AdamW _optimizer;
    private readonly Dictionary<Parameter, Tensor> _loopBias = new();
    private readonly Dictionary<Parameter, LoopScale> _loopScale = new();
    private readonly Dictionary<Parameter, Tensor> _ema = new();
    private bool _emaInPlace;
    private int _loopBiasFolds;
    private (int Step, Task<List<Batch>> Batches)? _prefetch;
    private readonly ICollectives _collectives;
    private readonly List<(TextToVideo Model, AdamW Optimizer)> _replicas;

    /// <summary><see cref="LoopCorrectionMode.Scale"/>'s running means for one parameter tensor.</summary>
    internal sealed class LoopScale
    {
        /// <summary>Running mean of &lt;exact, loop&gt;.</summary>
        public double Covariance { get; set; }

        /// <summary>Running mean of &lt;loop, loop&gt;.</summary>
        public double Variance { get; set; }

        /// <summary>The fitted coefficient, clamped to [0, 1] (0 without a variance).</summary>
        public float Coefficient => Variance > 0 ? (float)Math.Clamp(Covariance / Variance, 0, 1) : 0f;
    }

    /// <summary>Creates a trainer; stage 2 freezes the spatial UNet and text encoder first.</summary>
    public Trainer(TextToVideo model, IClipSource data, Stage stage, TrainOptions options)
        : this(model, [], data, stage, options)
    {
    }

    /// <summary>
    /// Creates a data-parallel trainer (<see cref="TrainOptions.Ranks"/>): <paramref name="model"/> is rank 0, and
    /// each of <paramref name="replicas"/> (as many as <c>Ranks - 1</c>: the same config and topology, each on its
    /// own backend) one more rank. Every parameter of rank 0 is copied into the replicas first, so they start the
    /// same whatever they were loaded with. Each step splits its clips among the ranks, runs forward and backward
    /// on every rank at once (a thread each), averages the gradients (<paramref name="collectives"/>; default
    /// <see cref="HostCollectives"/>) and steps every rank's optimizer alike: the update that gradient accumulation
    /// over the same batches takes, and the same weights on every rank. <see cref="Evaluate"/> spreads its batches
    /// over the ranks; sampling, the EMA and checkpoints use rank 0; a step's time and memory are rank 0's.
    /// </summary>
    public Trainer(TextToVideo model, IReadOnlyList<TextToVideo> replicas, IClipSource data, Stage stage, TrainOptions options, ICollectives? collectives = null)
    {
        ArgumentNullException.ThrowIfNull(replicas);
        _model = model;
        _data = data;
        Stage = stage;
        Options = options;
        PrefetchBatches = model.Backend.Name == "cuda";
        if (data.Count == 0)
        {
            throw new ArgumentException("the training data has no clips.");
        }

        if (options.Batch < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"the batch must be at least 1 clip (0: the config's), got {options.Batch}.");
        }

        if (options.Accumulate < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"gradient accumulation needs at least 1 batch a step, got {options.Accumulate}.");
        }

        if (!(options.EmaDecay >= 0 && options.EmaDecay < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"the EMA decay must be in [0, 1) (0: off), got {options.EmaDecay}.");
        }

        if (options.Accumulate > 1 && options.LoopCorrectionEvery > 0)
        {
            throw new ArgumentException("the loop correction's exact steps recompute one batch; they do not combine with gradient accumulation.", nameof(options));
        }

        CheckReplicas(model, replicas, options);
        _collectives = collectives ?? new HostCollectives();
        if (replicas.Count > 0)
        {
            // Rank 0's weights everywhere, before any is frozen or narrowed to bf16.
            _collectives.Broadcast([AllParameters(model), .. replicas.Select(AllParameters)]);
        }

        Prepare(model, stage, options);
        foreach (var replica in replicas)
        {
            Prepare(replica, stage, options);
        }

        _optimizer = NewOptimizer(model, options);
        _replicas = replicas.Select(r => (r, NewOptimizer(r, options))).ToList();

        if (HasEma)
        {
            // The average starts at the weights training starts from (a resumed run's come from its checkpoint).
            foreach (var (_, p) in _optimizer.Parameters)
            {
                var ema = Tensor.Empty(model.Backend, p.Shape, MemoryCategory.OptimizerState);
                model.Backend.Scale(p, 1f, ema);
                _ema[p] = ema;
            }
        }
    }

    /// <summary>Checks the data-parallel arguments: the rank count, and replicas that match rank 0 and have backends of their own.</summary>
    private static void CheckReplicas(TextToVideo model, IReadOnlyList<TextToVideo> replicas, TrainOptions options)
    {
        if (options.Ranks < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"data parallel needs at least 1 rank, got {options.Ranks}.");
        }

        if (replicas.Count != options.Ranks - 1)
        {
            throw new ArgumentException($"the options ask for {options.Ranks} rank(s): the model and {options.Ranks - 1} replica(s); {replicas.Count} replica(s) were given.", nameof(replicas));
        }

        if (options.Ranks > 1 && options.LoopCorrectionEvery > 0)
        {
            throw new ArgumentException("the loop correction's exact steps recompute one batch on one model; they do not combine with data parallel.", nameof(options));
        }

        var backends = new HashSet<IBackend> { model.Backend };
        foreach (var replica in replicas)
        {
            if (replica.Config != model.Config || replica.Topology != model.Topology)
            {
                throw new ArgumentException($"a replica must be the model's config and topology ({model.Config.Name}, {model.Topology}); one is {replica.Config.Name}, {replica.Topology}.", nameof(replicas));
            }

            if (!backends.Add(replica.Backend))
            {
                throw new ArgumentException("every rank needs a backend of its own: the ranks run at the same time.", nameof(replicas));
            }
        }
    }

    /// <summary>What the stage does to a model before training: stage 2 freezes the spatial UNet and the text encoder.</summary>
    private static void Prepare(TextToVideo model, Stage stage, TrainOptions options)
    {
        if (stage == Stage.TextToVideo)
        {
            if (model.Topology == Topology.Spatial)
            {
                throw new ArgumentException("stage 2 trains temporal layers: use the serial or parallel topology.");
            }

            model.FreezeForVideo();
            if (options.FrozenTemporal is { Count: > 0 } frozen)
            {
                model.Unet.FreezeTemporal(frozen);
            }

            if (options.FrozenWeights != DType.Float32)
            {
                model.Unet.StoreFrozenWeights(options.FrozenWeights);
                model.Text.StoreFrozenWeights(options.FrozenWeights);
            }
        }
        else if (options.FrozenWeights != DType.Float32)
        {
            throw new ArgumentException($"{options.FrozenWeights.Name()} frozen weights are a stage-2 setting; stage 1 trains every weight.");
        }
        else if (options.FrozenTemporal is { Count: > 0 })
        {
            throw new ArgumentException("frozen temporal layers are a stage-2 setting; stage 1 trains no temporal layer.");
        }
        else if (options.RecomputeTemporal)
        {
            throw new ArgumentException("recomputing the temporal layers is a stage-2 setting; the stage-1 model has none.");
        }

        model.Unet.RecomputeSpatial = options.RecomputeSpatial;
        model.Unet.RecomputeTemporal = options.RecomputeTemporal;
    }

    private static IEnumerable<(string Name, Parameter Parameter)> NamedParameters(TextToVideo model) =>
        model.Unet.NamedParameters().Select(n => ("unet." + n.Name, n.Parameter))
            .Concat(model.Text.NamedParameters().Select(n => ("text." + n.Name, n.Parameter)));

    private static List<Tensor> AllParameters(TextToVideo model) => NamedParameters(model).Select(n => (Tensor)n.Parameter).ToList();

    private static AdamW NewOptimizer(TextToVideo model, TrainOptions options) =>
        new(NamedParameters(model), options.LearningRate, weightDecay: options.WeightDecay);

    /// <summary>The stage.</summary>
    public Stage Stage { get; }

    /// <summary>The hyper-parameters.</summary>
    public TrainOptions Options { get; }

    /// <summary>Steps completed.</summary>
    public int StepsDone { get; private set; }

    /// <summary>
    /// Whether each training step starts making the next step's batches on a worker thread (host work: clips,
    /// latents, noise) while the device computes, so that the next step finds them ready. A batch depends only on
    /// the step, the seed and the data, so training is the same to the bit either way. Default: on where a device
    /// computes (the CUDA backend), off on the CPU backend, whose threads are busy with the step itself. The data
    /// source's <see cref="IClipSource.Get"/> and the codec's Encode then run on that thread too.
    /// </summary>
    public bool PrefetchBatches { get; set; }

    /// <summary>Clips per training step: <see cref="TrainOptions.Batch"/>, or the model config's when that is 0.</summary>
    public int BatchSize => Options.BatchFor(_model.Config);

    /// <summary>Trainable scalars.</summary>
    public long TrainableParameters => _optimizer.Parameters.Sum(p => p.Parameter.Numel);

    /// <summary>The optimiser (its state goes into checkpoints).</summary>
    public AdamW Optimizer => _optimizer;

    /// <summary>
    /// A host copy of the values of the parameters this trainer updates, by name: what
    /// <see cref="RestoreTrainable"/> puts back (early stopping keeps the best weights of a run this way,
    /// without holding device memory).
    /// </summary>
    public Dictionary<string, float[]> TrainableSnapshot() => _optimizer.Parameters.ToDictionary(p => p.Name, p => p.Parameter.ToArray());

    /// <summary>
    /// Puts back the values of a <see cref="TrainableSnapshot"/> of this trainer. The optimiser's moments and
    /// step count stay as they are: this restores weights to evaluate or sample, not a point to resume from.
    /// </summary>
    public void RestoreTrainable(IReadOnlyDictionary<string, float[]> snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        foreach (var (name, p) in _optimizer.Parameters)
        {
            if (!snapshot.TryGetValue(name, out var values) || values.Length != p.Numel)
            {
                throw new ArgumentException($"the snapshot does not match this trainer's parameters (at '{name}').", nameof(snapshot));
            }
        }

        foreach (var (name, p) in _optimizer.Parameters)
        {
            p.CopyFrom(snapshot[name]);
        }

        foreach (var (_, optimizer) in _replicas)
        {
            foreach (var (name, p) in optimizer.Parameters)
            {
                p.CopyFrom(snapshot[name]);
            }
        }
    }

    /// <summary>
    /// Restores the optimiser state and step count from a checkpoint taken by <see cref="Save"/>, and the loop
    /// correction's measurements when this trainer corrects in the same mode (otherwise the correction starts
    /// afresh). The options are this trainer's: pass the checkpoint's <see cref="Checkpoint.TrainOptions"/> to
    /// continue exactly.
    /// </summary>
    public void Resume(Checkpoint checkpoint)
    {
        var moments = checkpoint.Optimizer;
        _optimizer.LoadStateDict(moments, checkpoint.OptimizerSteps);
        _replicas.ForEach(r => r.Optimizer.LoadStateDict(moments, checkpoint.OptimizerSteps));
        StepsDone = checkpoint.Step;
        if (HasEma && checkpoint.Ema is { } ema)
        {
            foreach (var (name, p) in _optimizer.Parameters)
            {
                if (ema.TryGetValue(name, out var values))
                {
                    if (values.Length != p.Numel)
                    {
                        throw new InvalidDataException($"the checkpoint's EMA of '{name}' has {values.Length} values; the parameter has {p.Numel}.");
                    }

                    _ema[p].CopyFrom(values);
                }
            }
        }

        ClearLoopCorrection();
        if (checkpoint.LoopCorrection is not { } loop || !LoopCorrected || loop.Mode != Options.LoopCorrectionMode)
        {
            return;
        }

        foreach (var (name, p) in _optimizer.Parameters)
        {
            if (loop.Fits.TryGetValue(name, out var fit))
            {
                _loopScale[p] = new LoopScale { Covariance = fit.Covariance, Variance = fit.Variance };
            }

            if (loop.Bias.TryGetValue(name, out var bias))
            {
                if (bias.Length != p.Numel)
                {
                    throw new InvalidDataException($"the checkpoint's loop correction for '{name}' has {bias.Length} values; the parameter has {p.Numel}.");
                }

                _loopBias[p] = Tensor.FromArray(_model.Backend, bias, p.Shape, MemoryCategory.OptimizerState);
            }
        }

        _loopBiasFolds = loop.Folds;
    }

    /// <summary>
    /// Saves model and optimiser (and this trainer's options and loop correction) so that <see cref="Resume"/>
    /// continues exactly; without the optimiser (<paramref name="weightsOnly"/>) the file is a third of the size
    /// and serves as a starting point.
    /// </summary>
    public void Save(string path, IReadOnlyDictionary<string, string>? extra = null, bool weightsOnly = false) =>
        _model.Save(path, StepsDone, Options.Seed, weightsOnly ? null : _optimizer, extra, Options, weightsOnly ? null : LoopCorrectionState(), EmaSnapshot());

    /// <summary>
    /// What the loop correction (<see cref="TrainOptions.LoopCorrectionEvery"/>) has measured so far, by parameter
    /// name; null when this run has none or has not yet taken an exact step. A copy: training goes on without it.
    /// </summary>
    public LoopCorrectionState? LoopCorrectionState()
    {
        if (!LoopCorrected || _loopBiasFolds == 0)
        {
            return null;
        }

        var fits = _optimizer.Parameters.Where(np => _loopScale.ContainsKey(np.Parameter))
            .ToDictionary(np => np.Name, np => new LoopScaleFit(_loopScale[np.Parameter].Covariance, _loopScale[np.Parameter].Variance));
        var bias = _optimizer.Parameters.Where(np => _loopBias.ContainsKey(np.Parameter))
            .ToDictionary(np => np.Name, np => _loopBias[np.Parameter].ToArray());
        return new LoopCorrectionState(Options.LoopCorrectionMode, _loopBiasFolds, fits, bias);
    }

    private void ClearLoopCorrection()
    {
        foreach (var t in _loopBias.Values)
        {
            t.Dispose();
        }

        _loopBias.Clear();
        _loopScale.Clear();
        _loopBiasFolds = 0;
    }

    /// <summary>
    /// The running loop-minus-exact gradient difference by parameter (<see cref="TrainOptions.LoopCorrectionEvery"/>),
    /// an exponential mean from zero: times <see cref="LoopBiasScale"/> it is the debiased mean the steps subtract. For tests.
    /// </summary>
    internal IReadOnlyDictionary<Parameter, Tensor> LoopBias => _loopBias;

    /// <summary><see cref="LoopCorrectionMode.Scale"/>'s fitted coefficients by parameter. For tests.</summary>
    internal IReadOnlyDictionary<Parameter, LoopScale> LoopScales => _loopScale;

    /// <summary>
    /// <see cref="LoopCorrectionMode.Scale"/>'s fitted coefficients by parameter name (empty in other modes and
    /// before the first exact step): how far the loop's gradient is trusted, tensor by tensor.
    /// </summary>
    public IReadOnlyDictionary<string, float> LoopCoefficients() =>
        _optimizer.Parameters.Where(np => _loopScale.ContainsKey(np.Parameter)).ToDictionary(np => np.Name, np => _loopScale[np.Parameter].Coefficient);

    /// <summary>1 / (1 - momentum^folds): what turns <see cref="LoopBias"/> into an unbiased mean (as Adam debiases its moments).</summary>
    internal float LoopBiasScale => _loopBiasFolds == 0 ? 0f : 1f / (1f - MathF.Pow(Options.LoopCorrectionMomentum, _loopBiasFolds));

    /// <summary>Whether this run corrects the loop bridge's gradient (<see cref="TrainOptions.LoopCorrectionEvery"/>).</summary>
    private bool LoopCorrected => Options.LoopCorrectionEvery > 0 && Stage == Stage.TextToVideo && _model.Unet.IsLoop;

    /// <summary>Runs one training step on the next batch.</summary>
    public StepStats TrainStep()
    {
        if (_emaInPlace)
        {
            throw new InvalidOperationException("a training step with the EMA weights in place (inside EmaWeights()) would train the average.");
        }

        int step = StepsDone + 1;
        int n = Options.Accumulate;
        List<Batch> batches;
        using (Tape.Kind("Data"))
        {
            batches = BatchesOf(step);
        }

        var backend = _model.Backend;
        foreach (var b in Backends)
        {
            b.Synchronize();
            b.Memory.ResetPeak();
        }

        var clock = Stopwatch.StartNew();
        bool exactStep = LoopCorrected && (step <= Options.LoopCorrectionWarmup || (step - 1) % Options.LoopCorrectionEvery == 0);
        var (loss, saved, (byKind, byOp)) = _replicas.Count > 0 ? DataParallel(batches) : n == 1 ? Backprop(batches[0]) : Accumulated(batches);
        if (exactStep)
        {
            ExactStepAndFoldBias(batches[0]);
        }

        float norm;
        using (Tape.Kind("Optimizer"))
        {
            if (!exactStep && LoopCorrected)
            {
                CorrectLoopGradients();
            }

            float lr = Options.LearningRateAt(step);
            _optimizer.Lr = lr;
            norm = _optimizer.Step(Options.MaxGradNorm);
            if (_replicas.Count > 0)
            {
                // The same gradients, so the same clip and the same step; rank 0 stepped first, so a gradient that
                // is not finite has stopped every rank before any moved.
                OnEveryReplica(r =>
                {
                    r.Optimizer.Lr = lr;
                    r.Optimizer.Step(Options.MaxGradNorm);
                });
            }

            UpdateEma(step);
        }

        foreach (var b in Backends)
        {
            b.Synchronize();
        }

        double ms = clock.Elapsed.TotalMilliseconds;
        StepsDone = step;
        return new StepStats(step, loss, ms, backend.Memory.Snapshot(), saved, byKind, norm) { SavedByOp = byOp };
    }

    /// <summary>The backends of the ranks, rank 0's first.</summary>
    private IEnumerable<IBackend> Backends => _replicas.Select(r => r.Model.Backend).Prepend(_model.Backend);

    /// <summary>
    /// Data parallel: every rank's forward and backward on its run of <paramref name="batches"/> at once (rank 0 on
    /// this thread, each replica on a thread of its own), then the gradients averaged across the ranks. Returns the
    /// mean loss over all the batches and rank 0's saved bytes. A failure on any rank clears every rank's
    /// gradients and is thrown here.
    /// </summary>
    internal (float Loss, long Saved, SavedBreakdown Breakdown) DataParallel(List<Batch> batches)
    {
        int a = Options.Accumulate;
        var results = new (float Loss, long Saved, SavedBreakdown Breakdown)[_replicas.Count + 1];
        try
        {
            OnEveryRank(rank =>
            {
                var (model, optimizer) = rank == 0 ? (_model, _optimizer) : _replicas[rank - 1];
                var mine = batches.GetRange(rank * a, a);
                results[rank] = a == 1 ? Backprop(mine[0], model) : Accumulated(mine, model, optimizer);
            });

            var byRank = new List<IReadOnlyList<Tensor>> { Gradients(_optimizer, 0) };
            byRank.AddRange(_replicas.Select((r, i) => Gradients(r.Optimizer, i + 1)));
            _collectives.AllReduceMean(byRank);
        }
        catch
        {
            _optimizer.ZeroGrad();
            _replicas.ForEach(r => r.Optimizer.ZeroGrad());
            throw;
        }

        double loss = 0;
        foreach (var r in results)
        {
            loss += r.Loss;
        }

        return ((float)(loss / results.Length), results[0].Saved, results[0].Breakdown);
    }

    /// <summary>The gradients of <paramref name="optimizer"/>'s parameters in order; every one must have one.</summary>
    private static List<Tensor> Gradients(AdamW optimizer, int rank) =>
        optimizer.Parameters.Select(np => np.Parameter.Grad
            ?? throw new InvalidOperationException($"rank {rank}: '{np.Name}' has no gradient after backward; data parallel averages every trainable parameter's.")).ToList();

    /// <summary>
    /// Runs <paramref name="work"/> for every rank at once: rank 0 on this thread, each replica on a thread of its own
    /// (a tape is a thread's). Waits for all; then throws the lowest rank's failure, if any.
    /// </summary>
    private void OnEveryRank(Action<int> work)
    {
        var others = Enumerable.Range(1, _replicas.Count)
            .Select(rank => Task.Factory.StartNew(() => work(rank), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToArray();
        Exception? first = null;
        try
        {
            work(0);
        }
        catch (Exception e)
        {
            first = e;
        }

        foreach (var task in others)
        {
            try
            {
                task.GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                first ??= e;
            }
        }

        if (first is not null)
        {
            ExceptionDispatchInfo.Throw(first);
        }
    }

    /// <summary><see cref="OnEveryRank"/> for the replicas only (rank 0 done already).</summary>
    private void OnEveryReplica(Action<(TextToVideo Model, AdamW Optimizer)> work) =>
        OnEveryRank(rank =>
        {
            if (rank > 0)
            {
                work(_replicas[rank - 1]);
            }
        });

    /// <summary>The batches of training step <paramref name="step"/> (one, or one per accumulated micro-batch and rank).</summary>
    private List<Batch> MakeBatches(int step)
    {
        int n = Options.Accumulate * Options.Ranks;
        return Enumerable.Range(0, n).Select(j => MakeBatch(_data, (step - 1) * n + j + 1, Options.Seed, Options.CaptionDropout, BatchSize)).ToList();
    }

    /// <summary>
    /// Step <paramref name="step"/>'s batches: the prefetched ones when they are this step's (a failure to make them
    /// is thrown here, as if made now), else made now; then, with <see cref="PrefetchBatches"/>, starts making the
    /// next step's on a worker thread.
    /// </summary>
    private List<Batch> BatchesOf(int step)
    {
        List<Batch>? batches = null;
        if (TakePrefetch() is { } pending)
        {
            if (pending.Step == step)
            {
                batches = pending.Batches.GetAwaiter().GetResult();
            }
            else
            {
                Settle(pending.Batches); // another step's (the trainer resumed elsewhere): dropped
            }
        }

        batches ??= MakeBatches(step);
        if (PrefetchBatches)
        {
            int next = step + 1;
            _prefetch = (next, Task.Run(() => MakeBatches(next)));
        }

        return batches;
    }

    private (int Step, Task<List<Batch>> Batches)? TakePrefetch()
    {
        var pending = _prefetch;
        _prefetch = null;
        return pending;
    }

    /// <summary>Waits for a prefetch nobody will use, its failure included (it belongs to no step that runs).</summary>
    private static void Settle(Task pending)
    {
        try
        {
            pending.Wait();
        }
        catch (AggregateException)
        {
        }
    }

    /// <summary>
    /// Between exact steps (<see cref="TrainOptions.LoopCorrectionEvery"/>): corrects the loop's gradient in the
    /// parameters by what the exact steps so far have measured; nothing before the first exact step.
    /// </summary>
    internal void CorrectLoopGradients()
    {
        var backend = _model.Backend;
        float scale = LoopBiasScale;
        foreach (var (_, p) in _optimizer.Parameters)
        {
            if (p.Grad is not { } g)
            {
                continue;
            }

            if (_loopBias.TryGetValue(p, out var bias))
            {
                backend.Add(g, bias, g, 1f, -scale);
            }
            else if (_loopScale.TryGetValue(p, out var fit))
            {
                backend.Scale(g, fit.Coefficient, g);
            }
        }
    }

    /// <summary>The EMA decay of 1-based step <paramref name="step"/>: <see cref="TrainOptions.EmaDecay"/>, warmed up as (1 + t) / (10 + t).</summary>
    public static float EmaDecayAt(float decay, int step) => Math.Min(decay, (1f + step) / (10f + step));

    /// <summary>Whether this trainer keeps an EMA of its weights (<see cref="TrainOptions.EmaDecay"/>).</summary>
    public bool HasEma => Options.EmaDecay > 0;

    private void UpdateEma(int step)
    {
        if (!HasEma)
        {
            return;
        }

        float decay = EmaDecayAt(Options.EmaDecay, step);
        foreach (var (p, ema) in _ema)
        {
            _model.Backend.Add(ema, p, ema, decay, 1f - decay);
        }
    }

    /// <summary>
    /// Puts the EMA weights (<see cref="TrainOptions.EmaDecay"/>) in the model until the returned scope is disposed,
    /// which puts the trained weights back: validation and sampling with the average. Without an EMA, or before
    /// the first step, the scope changes nothing. Training steps inside the scope are refused.
    /// </summary>
    public IDisposable EmaWeights()
    {
        if (!HasEma || _emaInPlace)
        {
            return new Restore(null);
        }

        SwapEma();
        _emaInPlace = true;
        return new Restore(() =>
        {
            SwapEma();
            _emaInPlace = false;
        });
    }

    private sealed class Restore(Action? restore) : IDisposable
    {
        private Action? _restore = restore;

        public void Dispose()
        {
            _restore?.Invoke();
            _restore = null;
        }
    }

    private void SwapEma()
    {
        var backend = _model.Backend;
        foreach (var (p, ema) in _ema)
        {
            using var held = Tensor.Empty(backend, p.Shape);
            backend.Scale(p, 1f, held);
            backend.Scale(ema, 1f, p);
            backend.Scale(held, 1f, ema);
        }
    }

    /// <summary>The EMA weights by parameter name (a host copy); null without an EMA.</summary>
    public Dictionary<string, float[]>? EmaSnapshot()
    {
        if (!HasEma)
        {
            return null;
        }

        return _optimizer.Parameters.Where(np => _ema.ContainsKey(np.Parameter))
            .ToDictionary(np => np.Name, np => (_emaInPlace ? np.Parameter : _ema[np.Parameter]).ToArray());
    }

    /// <summary>
    /// Forward and backward of each batch in turn, their gradients summed in the parameters and scaled by
    /// 1 / count: the gradient of the mean loss over all their clips (batches of one size). Returns the mean loss
    /// and the most any one batch kept for backward.
    /// </summary>
    internal (float Loss, long Saved, SavedBreakdown Breakdown) Accumulated(IReadOnlyList<Batch> batches) => Accumulated(batches, _model, _optimizer);

    private (float Loss, long Saved, SavedBreakdown Breakdown) Accumulated(IReadOnlyList<Batch> batches, TextToVideo model, AdamW optimizer)
    {
        double loss = 0;
        long saved = -1;
        SavedBreakdown breakdown = new([], []);
        foreach (var batch in batches)
        {
            var (l, s, k) = Backprop(batch, model);
            loss += l;
            if (s > saved)
            {
                (saved, breakdown) = (s, k);
            }
        }

        float scale = 1f / batches.Count;
        foreach (var (_, p) in optimizer.Parameters)
        {
            if (p.Grad is { } g)
            {
                model.Backend.Scale(g, scale, g);
            }
        }

        return ((float)(loss / batches.Count), saved, breakdown);
    }

    /// <summary>The bytes a batch kept for backward at its start, by layer kind and by layer kind and op.</summary>
    internal readonly record struct SavedBreakdown(Dictionary<string, long> ByKind, IReadOnlyList<TapeOpStats> ByOp);

    /// <summary>Forward and backward of one batch on <paramref name="model"/> (default: rank 0's); the gradients land in the parameters.</summary>
    internal (float Loss, long Saved, SavedBreakdown Breakdown) Backprop(Batch batch, TextToVideo? model = null)
    {
        model ??= _model;
        var backend = model.Backend;
        using var tape = Tape.Begin();
        tape.SavedActivations = Options.SavedActivations;
        float loss;
        long saved;
        SavedBreakdown breakdown;
        using (var x = Tensor.FromArray(backend, batch.NoisyLatents, batch.Shape))
        using (var target = Tensor.FromArray(backend, batch.Noise, batch.Shape))
        using (var context = EncodeContext(model, batch.Captions, batch.Frames))
        using (var eps = model.Unet.Forward(x, batch.Timesteps, context, batch.Frames))
        using (var lossT = DiffusionLoss(eps, target, batch.Timesteps, batch.Captions.Length, model.Schedule, Options.MinSnrGamma, out var plain))
        using (plain)
        {
            saved = tape.SavedBytes;
            breakdown = new(tape.StatsByKind.ToDictionary(kv => kv.Key, kv => kv.Value.SavedBytes), tape.StatsByOp);
            lossT.Backward(checkFinite: Options.CheckFinite);
            loss = plain.Item();
        }

        return (loss, Math.Max(saved, tape.PeakSavedBytes), breakdown);
    }

    /// <summary>
    /// With the loop's gradient in the parameters: computes serial's exact one on the same batch (every level
    /// exact, spatial layers recomputed), folds the pair into the correction (<see cref="TrainOptions.LoopCorrectionMode"/>),
    /// and leaves the exact gradient in the parameters for the optimizer.
    /// </summary>
    private void ExactStepAndFoldBias(Batch batch)
    {
        var backend = _model.Backend;
        var unet = _model.Unet;
        var loopGrads = new Dictionary<Parameter, Tensor>();
        try
        {
            bool scale = Options.LoopCorrectionMode == LoopCorrectionMode.Scale;
            foreach (var (_, p) in _optimizer.Parameters)
            {
                if (p.Grad is { } g)
                {
                    // The scale mode needs only dot products: a sample of a large tensor will do.
                    loopGrads[p] = scale ? Sample(g) : Copy(g);
                }

                p.ClearGrad();
            }

            (int levels, bool recompute) = (unet.LoopExactLevels, unet.RecomputeSpatial);
            unet.LoopExactLevels = -1;
            unet.RecomputeSpatial = true;
            try
            {
                Backprop(batch);
            }
            finally
            {
                (unet.LoopExactLevels, unet.RecomputeSpatial) = (levels, recompute);
            }

            float m = Options.LoopCorrectionMomentum;
            if (scale)
            {
                // Running means from zero; their ratio needs no debiasing.
                using var sum = Tensor.Zeros(backend, new Shape(1));
                foreach (var (p, loopGrad) in loopGrads)
                {
                    if (p.Grad is not { } exact)
                    {
                        continue;
                    }

                    var fit = _loopScale.TryGetValue(p, out var known) ? known : _loopScale[p] = new LoopScale();
                    using var exactSample = loopGrad.Numel == exact.Numel ? null : Sample(exact);
                    backend.Fill(sum, 0f);
                    backend.SumSquaresAccumulate(loopGrad, sum);
                    double variance = sum.Item();
                    backend.Mul(loopGrad, exactSample ?? exact, loopGrad);
                    backend.Sum(loopGrad, sum);
                    fit.Covariance = m * fit.Covariance + (1 - m) * sum.Item();
                    fit.Variance = m * fit.Variance + (1 - m) * variance;
                }

                _loopBiasFolds++;
                return;
            }

            // An exponential mean from zero, debiased where it is used (LoopBiasScale), so the first differences
            // count alike instead of the first one lasting for 1 / (1 - momentum) folds.
            foreach (var (p, loopGrad) in loopGrads)
            {
                if (p.Grad is not { } exact)
                {
                    continue;
                }

                if (!_loopBias.TryGetValue(p, out var bias))
                {
                    bias = Tensor.Zeros(backend, exact.Shape, MemoryCategory.OptimizerState);
                    _loopBias[p] = bias;
                }

                backend.Add(loopGrad, exact, loopGrad, 1f, -1f);
                backend.Add(bias, loopGrad, bias, m, 1f - m);
            }

            _loopBiasFolds++;
        }
        finally
        {
            foreach (var t in loopGrads.Values)
            {
                t.Dispose();
            }
        }
    }

    /// <summary>A whole copy of <paramref name="g"/>.</summary>
    private Tensor Copy(Tensor g)
    {
        var copy = Tensor.Empty(_model.Backend, g.Shape);
        _model.Backend.Scale(g, 1f, copy);
        return copy;
    }

    /// <summary>
    /// Every k-th element of <paramref name="g"/>, k = ceil(n / <see cref="TrainOptions.LoopScaleSamples"/>): a
    /// whole copy up to that size. The same elements for the same shape, so two samples pair up.
    /// </summary>
    private Tensor Sample(Tensor g)
    {
        long n = g.Numel;
        long stride = (n + Options.LoopScaleSamples - 1) / Options.LoopScaleSamples;
        if (stride <= 1)
        {
            return Copy(g);
        }

        int count = checked((int)((n + stride - 1) / stride));
        var sample = Tensor.Empty(_model.Backend, new Shape(count));
        _model.Backend.CopyRows(g, 0, stride, sample, 0, 1, count, 1);
        return sample;
    }

    /// <summary>
    /// Mean loss over <paramref name="batches"/> fixed batches of <paramref name="data"/> (same clips,
    /// timesteps and noise for every model given the same seed), without recording anything. The batches are
    /// of the config's size whatever <see cref="TrainOptions.Batch"/> is, so runs with different batches
    /// are validated on the same clips. <paramref name="perItem"/>, when given, receives the loss of every item
    /// (a clip; in stage 1 an image) in order, batch by batch: two models evaluated with the same seed pair up
    /// item by item (<see cref="PairedDifference"/>). A data-parallel trainer spreads the batches over its ranks
    /// (the same losses as rank 0 alone would give), except while <see cref="EmaWeights"/> has rank 0's average in place.
    /// </summary>
    public float Evaluate(IClipSource data, int batches, int seed, IList<double>? perItem = null)
    {
        // The batches are made here (rank 0's data source and codec); with replicas holding the same weights (not
        // while the EMA is in place on rank 0 alone), rank r evaluates batches r, r + R, ... at the same time.
        var made = Enumerable.Range(0, batches).Select(i => MakeBatch(data, i + 1, seed ^ 0x2545F491, captionDropout: 0)).ToList();
        var results = new (double Loss, double[]? Items)[batches];
        bool items = perItem is not null;
        if (_replicas.Count == 0 || _emaInPlace)
        {
            for (int i = 0; i < batches; i++)
            {
                results[i] = EvaluateBatch(_model, made[i], items);
            }
        }
        else
        {
            int ranks = _replicas.Count + 1;
            OnEveryRank(rank =>
            {
                var model = rank == 0 ? _model : _replicas[rank - 1].Model;
                for (int i = rank; i < batches; i += ranks)
                {
                    results[i] = EvaluateBatch(model, made[i], items);
                }
            });
        }

        double total = 0;
        foreach (var (loss, itemLosses) in results)
        {
            total += loss;
            foreach (var l in itemLosses ?? [])
            {
                perItem!.Add(l);
            }
        }

        return (float)(total / batches);
    }

    /// <summary>One validation batch on <paramref name="model"/>: its loss, and with <paramref name="items"/> each item's.</summary>
    private static (double Loss, double[]? Items) EvaluateBatch(TextToVideo model, Batch batch, bool items)
    {
        using var noGrad = Tape.NoGrad();
        using var x = Tensor.FromArray(model.Backend, batch.NoisyLatents, batch.Shape);
        using var target = Tensor.FromArray(model.Backend, batch.Noise, batch.Shape);
        using var context = model.EncodeText(batch.Captions, batch.Frames);
        using var eps = model.Unet.Forward(x, batch.Timesteps, context, batch.Frames);
        using var loss = Ops.MseLoss(eps, target);
        double total = loss.Item();
        if (!items)
        {
            return (total, null);
        }

        var perItem = new double[batch.Captions.Length];
        for (int k = 0; k < perItem.Length; k++)
        {
            using var e = Ops.Narrow(eps, 0, k * batch.Frames, batch.Frames);
            using var t = Ops.Narrow(target, 0, k * batch.Frames, batch.Frames);
            using var l = Ops.MseLoss(e, t);
            perItem[k] = l.Item();
        }

        return (total, perItem);
    }

    /// <summary>
    /// The training loss of predicted noise <paramref name="eps"/> against <paramref name="target"/>, both
    /// [items * k, ...] with <paramref name="items"/> items of k images sharing one timestep: the plain MSE
    /// when <paramref name="minSnrGamma"/> is 0, else sum_i w_i MSE_i / items with w_i = min(SNR, gamma) / SNR
    /// at item i's timestep. <paramref name="plain"/> is the unweighted MSE (no tape), for reporting.
    /// </summary>
    internal static Tensor DiffusionLoss(Tensor eps, Tensor target, IReadOnlyList<int> timesteps, int items, NoiseSchedule schedule, float minSnrGamma, out Tensor plain)
    {
        if (minSnrGamma < 0 || float.IsNaN(minSnrGamma))
        {
            throw new ArgumentOutOfRangeException(nameof(minSnrGamma), $"min-SNR gamma must be 0 (off) or positive, got {minSnrGamma}.");
        }

        if (minSnrGamma == 0)
        {
            var mse = Ops.MseLoss(eps, target);
            plain = Ops.Detach(mse);
            return mse;
        }

        int per = eps.Dim(0) / items;
        Tensor? total = null;
        try
        {
            for (int i = 0; i < items; i++)
            {
                double ab = schedule.AlphasCumprod[timesteps[i * per]];
                double snr = ab / (1 - ab);
                float w = (float)(Math.Min(snr, minSnrGamma) / snr / items);
                using var e = Ops.Narrow(eps, 0, i * per, per);
                using var t = Ops.Narrow(target, 0, i * per, per);
                using var l = Ops.MseLoss(e, t);
                var next = total is null ? Ops.Scale(l, w) : Ops.Combine(total, l, 1f, w);
                total?.Dispose();
                total = next;
            }

            using (Tape.NoGrad())
            {
                plain = Ops.MseLoss(eps, target);
            }

            var result = total!;
            total = null;
            return result;
        }
        finally
        {
            total?.Dispose();
        }
    }

    /// <summary>Releases the optimiser state (after any batch still being made for a next step).</summary>
    public void Dispose()
    {
        if (TakePrefetch() is { } pending)
        {
            Settle(pending.Batches);
        }

        ClearLoopCorrection();
        foreach (var t in _ema.Values)
        {
            t.Dispose();
        }

        _ema.Clear();
        _optimizer.Dispose();
        _replicas.ForEach(r => r.Optimizer.Dispose());
    }

    private Tensor EncodeContext(TextToVideo model, IReadOnlyList<string> captions, int frames)
    {
        // Stage 2: the frozen text encoder is inference-only in both topologies.
        if (Stage == Stage.TextToVideo)
        {
            using var noGrad = Tape.NoGrad();
            return model.EncodeText(captions, frames);
        }

        return model.EncodeText(captions, frames);
    }

    /// <summary>
    /// The batch of step <paramref name="step"/> of <paramref name="clips"/> clips (null: the config's batch):
    /// stage 1 takes clips x Frames single frames of different clips (each its own caption and timestep);
    /// stage 2 takes whole clips (one timestep per clip).
    /// </summary>
    internal Batch MakeBatch(IClipSource data, int step, int seed, float captionDropout, int? clips = null)
    {
        var config = _model.Config;
        var rng = new Random(StepSeed(seed, step));
        bool video = Stage == Stage.TextToVideo;
        int batch = clips ?? config.Batch;
        int items = video ? batch : batch * config.Frames;
        int frames = video ? config.Frames : 1;
        int c = config.LatentChannels, h = config.LatentHeight, w = config.LatentWidth;
        int imageSize = c * h * w;
        var latents = new float[items * frames * imageSize];
        var captions = new string[items];
        var timesteps = new int[items * frames];
        for (int i = 0; i < items; i++)
        {
            var clip = data.Get(rng.Next(data.Count));
            if (clip.FrameCount < frames || clip.Height != config.Height || clip.Width != config.Width)
            {
                throw new InvalidDataException($"clip '{clip.Caption}' is {clip.FrameCount}x{clip.Height}x{clip.Width}; the {config.Name} config needs {frames}x{config.Height}x{config.Width}.");
            }

            var all = _model.Codec.Encode(clip);
            int first = video ? 0 : rng.Next(clip.FrameCount);
            Array.Copy(all, first * imageSize, latents, i * frames * imageSize, frames * imageSize);
            captions[i] = rng.NextDouble() < captionDropout ? "" : clip.Caption;
            int t = rng.Next(_model.Schedule.Steps);
            Array.Fill(timesteps, t, i * frames, frames);
        }

        var noise = NoiseSchedule.ClipNoise(rng, items, frames, imageSize, video ? config.FrameNoiseCorrelation : 0f);
        var noisy = _model.Schedule.AddNoise(latents, noise, timesteps, imageSize);
        return new Batch(noisy, noise, timesteps, captions, frames, new Shape(items * frames, c, h, w));
    }

    /// <summary>
    /// The seed of one step's batch: a fixed mix of the run's seed and the step (HashCode.Combine would
    /// differ between processes and break repeatable runs).
    /// </summary>
    internal static int StepSeed(int seed, int step)
    {
        // SplitMix64 finaliser over (seed, step).
        ulong z = ((ulong)(uint)seed << 32 | (uint)step) + 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }

    /// <summary>One training batch on the host.</summary>
    internal sealed record Batch(float[] NoisyLatents, float[] Noise, int[] Timesteps, string[] Captions, int Frames, Shape Shape);
}
