using System.Text.Json;
using System.Text.Json.Serialization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Distributed;

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
    /// (<see cref="Tape.SavedActivations"/>): <see cref="DType.BFloat16"/> keeps about half the bytes and
    /// <see cref="DType.Int8Blocks"/> about a quarter, both topologies alike. Forward and the loss are unchanged; the gradients
    /// are computed from the kept activations so rounded, so they differ from fp32's by about that type's precision
    /// (bf16: 2^-9 relative per value; int8 blocks: up to 1/254 of the largest magnitude of each block of 128). Default fp32.
    /// </summary>
    public DType SavedActivations { get; init; } = DType.Float32;

    /// <summary>
    /// The element type of AdamW's two moments (<see cref="Engine.Optim.AdamW.StateType"/>): <see cref="DType.BFloat16"/>
    /// halves the optimiser state, each moment updated in fp32 and stored by stochastic rounding (unbiased; rounding to
    /// nearest would keep the second moment from moving, since it changes by 0.001 of itself a step). Both topologies
    /// alike, stage 1 and stage 2. Default fp32.
    /// </summary>
    public DType OptimizerState { get; init; } = DType.Float32;

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
        Ranks == 1 ? null : Ranks, OptimizerState == DType.Float32 ? null : OptimizerState.Name()));

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
            OptimizerState = ParseDType(r.OptimizerState, "optimizer-state"),
        };
    }

    private static DType ParseDType(string? name, string what) => name switch
    {
        null or "float32" => DType.Float32,
        "bfloat16" => DType.BFloat16,
        "int8" when what is "saved-activation" or "frozen-weight" => DType.Int8Blocks,
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
        [property: JsonPropertyName("ranks")] int? Ranks,
        [property: JsonPropertyName("optimizer_state")] string? OptimizerState);

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
