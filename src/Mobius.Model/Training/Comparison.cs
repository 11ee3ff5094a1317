using System.Text.Json;
using System.Text.Json.Serialization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Distributed;

namespace Mobius.Model.Training;

/// <summary>Settings of a serial-versus-parallel comparison.</summary>
public sealed record ComparisonOptions
{
    /// <summary>Model configuration (ignored when a checkpoint is given: the checkpoint's config is used).</summary>
    public required ModelConfig Config { get; init; }

    /// <summary>Stage-1 (text-to-image) checkpoint both topologies start from; null: a random text-to-image model.</summary>
    public string? Checkpoint { get; init; }

    /// <summary>Training steps per topology.</summary>
    public int Steps { get; init; } = 100;

    /// <summary>Seed shared by both runs (temporal initialisation, data order, noise, sampling).</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Training hyper-parameters shared by both runs.</summary>
    public TrainOptions Train { get; init; } = new();

    /// <summary>Steps whose times are left out of the median (warm-up: first-touch allocation, JIT).</summary>
    public int WarmupSteps { get; init; } = 3;

    /// <summary>Batches in the validation loss.</summary>
    public int ValidationBatches { get; init; } = 4;

    /// <summary>
    /// Also measure the validation loss of both topologies every this many steps (0: before the first step and
    /// after the last only), for <see cref="TopologyResult.ValidationCurve"/>. Validation runs without a tape
    /// between steps: it is in no step's time or peak, and the training batches stay the same.
    /// </summary>
    public int ValidateEvery { get; init; }

    /// <summary>
    /// Early stopping: after training, each topology goes back to its weights at the validation with the lowest
    /// loss (the untrained model included) before the final validation and the samples. Needs
    /// <see cref="ValidateEvery"/>; the weights are kept on the host, not the device.
    /// </summary>
    public bool KeepBest { get; init; }

    /// <summary>Prompts sampled per topology for the motion score (0: no sampling).</summary>
    public int SamplePrompts { get; init; } = 4;

    /// <summary>DDIM steps when sampling.</summary>
    public int SampleSteps { get; init; } = 25;

    /// <summary>Classifier-free guidance scale.</summary>
    public float Guidance { get; init; } = 4f;

    /// <summary>
    /// Correlation across a clip's frames of the noise sampling starts from (null: <see cref="TextToVideo.SampleFrameNoise"/>'s
    /// default, 0.9 or the training correlation where higher). The same for both topologies.
    /// </summary>
    public float? SampleFrameNoise { get; init; }

    /// <summary>Train, validate and sample on clips of these motions only (null: all of them). Generated clips only.</summary>
    public IReadOnlyList<Motion>? Motions { get; init; }

    /// <summary>
    /// A folder of GIFs with a captions.jsonl (<see cref="GifFolderClips"/>) to train, validate and sample on
    /// instead of the generated emoji clips: every tenth GIF is held out (<see cref="GifFolderClips.IsHeldOut"/>).
    /// Every caption must tokenize with the model's vocabulary (<see cref="GifFolderClips.CheckCaptions"/>). Null: the generated clips.
    /// </summary>
    public string? DataFolder { get; init; }

    /// <summary>Correlation of the diffusion noise across a clip's frames (null: <see cref="ModelConfig.DefaultFrameNoiseCorrelation"/>).</summary>
    public float? FrameNoiseCorrelation { get; init; }

    /// <summary>The parallel topology's bridge (see <see cref="ModelConfig.Bridge"/>).</summary>
    public string Bridge { get; init; } = ModelConfig.DefaultBridge;

    /// <summary>Creates a fresh backend (one per topology, so memory statistics stay separate); with data parallel, rank 0's.</summary>
    public required Func<IBackend> BackendFactory { get; init; }

    /// <summary>
    /// With <see cref="TrainOptions.Ranks"/> above 1 in <see cref="Train"/>: creates the backend of rank r (1 and up) of
    /// a topology, which trains a replica of its model there (<see cref="Trainer"/>'s data parallel). Each topology gets
    /// ranks of its own. Default: <see cref="BackendFactory"/>.
    /// </summary>
    public Func<int, IBackend>? RankBackendFactory { get; init; }

    /// <summary>
    /// With ranks: how a topology's ranks average their gradients, given their backends (rank 0's first); disposed
    /// with them when it is <see cref="IDisposable"/>. Default: <see cref="HostCollectives"/>.
    /// </summary>
    public Func<IReadOnlyList<IBackend>, ICollectives>? CollectivesFactory { get; init; }

    /// <summary>
    /// Extra steps per topology, after everything else is measured, with the time split by layer kind (the
    /// device synchronised at every kind boundary, so these steps run slower and are not in the step times); on a
    /// backend that times its calls (<see cref="IBackend.TimeCalls"/>) as many again with every call timed on the device.
    /// 0: none.
    /// </summary>
    public int ProfileSteps { get; init; }

    /// <summary>
    /// After everything else, time both topologies at every recompute policy, this many steps per case with the
    /// cases taking turns (<see cref="Frontier.Measure"/>; into <see cref="ComparisonResult.Frontier"/>). 0: not measured.
    /// Skipped when training was stopped early.
    /// </summary>
    public int FrontierSteps { get; init; }

    /// <summary>With <see cref="FrontierSteps"/>: all eight cases live at once (the CPU, small models), or the two topologies of a policy at a time (a GPU).</summary>
    public bool FrontierTogether { get; init; } = true;

    /// <summary>
    /// Cancelled during training: both topologies stop after the step pair in progress, and the comparison
    /// finishes with the steps taken (final validation, samples, result), which <see cref="ComparisonResult.Steps"/>
    /// then counts (fewer than <see cref="ComparisonResult.StepsRequested"/>). Both topologies always take the same
    /// number of steps. A long run stopped this way keeps what it measured.
    /// </summary>
    public CancellationToken StopTraining { get; init; }
}

/// <summary>What one topology measured.</summary>
public sealed record TopologyResult
{
    /// <summary>Median step time after warm-up, milliseconds.</summary>
    [JsonPropertyName("step_ms_median")]
    public double StepMsMedian { get; init; }

    /// <summary>
    /// Mean step time after warm-up, milliseconds: with <see cref="TrainOptions.LoopCorrectionEvery"/> the honest
    /// cost, since the median falls on the cheap steps and leaves the exact ones out.
    /// </summary>
    [JsonPropertyName("step_ms_mean")]
    public double StepMsMean { get; init; }

    /// <summary>Highest bytes in use during any measured step.</summary>
    [JsonPropertyName("peak_bytes")]
    public long PeakBytes { get; init; }

    /// <summary>
    /// Highest bytes the backend's caching allocator held from the system during any measured step, its cache included:
    /// on a GPU what the device has in use for tensors, less the context's and the libraries' own. It exceeds
    /// <see cref="PeakBytes"/> by the cache's blocks and their rounding, and with two streams also by blocks one stream's
    /// cache holds that the other may not borrow yet (docs/architecture.md).
    /// </summary>
    [JsonPropertyName("peak_reserved_bytes")]
    public long PeakReservedBytes { get; init; }

    /// <summary>Highest bytes the tape held for backward during any step.</summary>
    [JsonPropertyName("saved_activation_bytes")]
    public long SavedActivationBytes { get; init; }

    /// <summary>Trainable scalars.</summary>
    [JsonPropertyName("trainable_params")]
    public long TrainableParams { get; init; }

    /// <summary>Mean training loss over the last tenth of the steps (at least one).</summary>
    [JsonPropertyName("final_loss")]
    public double FinalLoss { get; init; }

    /// <summary>Loss on held-out clips (the same batches for both topologies).</summary>
    [JsonPropertyName("validation_loss")]
    public double ValidationLoss { get; init; }

    /// <summary>The same validation loss before the first step (equal for both topologies): the frozen text-to-image model frame by frame, or the text-to-video model both fine-tune.</summary>
    [JsonPropertyName("initial_validation_loss")]
    public double InitialValidationLoss { get; init; }

    /// <summary>Every validation of the run, step 0 (before training) first and the last step last.</summary>
    [JsonPropertyName("validation_curve")]
    public IReadOnlyList<ValidationPoint> ValidationCurve { get; init; } = [];

    /// <summary>The step of the lowest loss on <see cref="ValidationCurve"/> (0: training never beat the untrained model).</summary>
    [JsonPropertyName("best_validation_step")]
    public int BestValidationStep { get; init; }

    /// <summary>The lowest loss on <see cref="ValidationCurve"/>.</summary>
    [JsonPropertyName("best_validation_loss")]
    public double BestValidationLoss { get; init; }

    /// <summary>
    /// The step whose weights <see cref="ValidationLoss"/> and the samples come from: the last step, or with
    /// <see cref="ComparisonOptions.KeepBest"/> the best validation's.
    /// </summary>
    [JsonPropertyName("weights_step")]
    public int WeightsStep { get; init; }

    /// <summary>Mean motion score of DDIM samples: the geometric mean of the two parts below (null when not sampled).</summary>
    [JsonPropertyName("motion_score")]
    public double? MotionScore { get; init; }

    /// <summary>Mean of how well the samples' movement matches their captions (null when not sampled).</summary>
    [JsonPropertyName("motion_match")]
    public double? MotionMatch { get; init; }

    /// <summary>Mean frame-to-frame consistency of the samples (1: each frame is the previous one moved; null when not sampled).</summary>
    [JsonPropertyName("consistency")]
    public double? Consistency { get; init; }

    /// <summary>Memory by category at the moment of the peak.</summary>
    [JsonPropertyName("memory")]
    public required IReadOnlyDictionary<string, long> Memory { get; init; }

    /// <summary>Saved activations by layer kind at the start of the last backward.</summary>
    [JsonPropertyName("saved_by_kind")]
    public required IReadOnlyDictionary<string, long> SavedByKind { get; init; }

    /// <summary>
    /// Of <see cref="SavedByKind"/>, the frozen spatial layers' bytes (<see cref="UNet3D.FrozenSpatialKinds"/>): what
    /// serial keeps to pass input gradients through them and the parallel topology never keeps.
    /// </summary>
    [JsonPropertyName("saved_frozen_spatial_bytes")]
    public long SavedFrozenSpatialBytes => UNet3D.SplitSaved(SavedByKind).Frozen;

    /// <summary>The same bytes by layer kind and op, largest first (<see cref="Engine.Autograd.Tape.StatsByOp"/>).</summary>
    [JsonPropertyName("saved_by_op")]
    public IReadOnlyList<Engine.Autograd.TapeOpStats> SavedByOp { get; init; } = [];

    /// <summary>Loss of every step.</summary>
    [JsonPropertyName("losses")]
    public required IReadOnlyList<double> Losses { get; init; }

    /// <summary>Time of every step, milliseconds.</summary>
    [JsonPropertyName("step_ms")]
    public required IReadOnlyList<double> StepMs { get; init; }

    /// <summary>Motion scores of each sample, in prompt order (null for a caption that names no motion).</summary>
    [JsonPropertyName("sample_scores")]
    public required IReadOnlyList<double?> SampleScores { get; init; }

    /// <summary>How well each sample's movement matches its caption, in prompt order (null: not scored).</summary>
    [JsonPropertyName("sample_movement")]
    public IReadOnlyList<double?> SampleMovement { get; init; } = [];

    /// <summary>Each sample's frame-to-frame consistency, in prompt order (null: not scored).</summary>
    [JsonPropertyName("sample_consistency")]
    public IReadOnlyList<double?> SampleConsistency { get; init; } = [];

    /// <summary>
    /// The loss of every held-out clip in the validation <see cref="ValidationLoss"/> is the mean of, batch by
    /// batch: the same clips, timesteps and noise in both topologies, so they pair up clip by clip.
    /// </summary>
    [JsonPropertyName("validation_clip_losses")]
    public IReadOnlyList<double> ValidationClipLosses { get; init; } = [];

    /// <summary>
    /// The loop correction's fitted coefficients by parameter at the end of training (<see cref="LoopCorrectionMode.Scale"/>;
    /// null otherwise).
    /// </summary>
    [JsonPropertyName("loop_coefficients")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyDictionary<string, float>? LoopCoefficients { get; init; }

    /// <summary>Mean time per profiled step by layer kind (null without <see cref="ComparisonOptions.ProfileSteps"/>).</summary>
    [JsonPropertyName("time_by_kind")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyDictionary<string, KindTime>? TimeByKind { get; init; }

    /// <summary>
    /// Kernel launches and library calls per profiled step, by name (null without
    /// <see cref="ComparisonOptions.ProfileSteps"/> or on a backend that does not count them,
    /// <see cref="IBackend.CallCounts"/>): where a step is launch-bound, their number sets its time.
    /// </summary>
    [JsonPropertyName("calls_per_step")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyDictionary<string, double>? CallsPerStep { get; init; }

    /// <summary>
    /// Device milliseconds per profiled step by call name, from as many steps again as <see cref="ComparisonOptions.ProfileSteps"/>
    /// with every call timed (<see cref="IBackend.TimeCalls"/>), largest first; null without profile steps or on a backend
    /// that does not time calls. Where the device is busy throughout (a large model), they add up to nearly the step time.
    /// </summary>
    [JsonPropertyName("call_ms_per_step")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyDictionary<string, double>? CallMsPerStep { get; init; }
}

/// <summary>
/// Parallel minus serial on each quality measure, paired: over the held-out clips for the validation loss, over
/// the sampled prompts for the motion scores. Null where there were fewer than two pairs.
/// </summary>
/// <param name="ValidationLoss">The final validation loss (the kept weights' with early stopping), clip by clip.</param>
/// <param name="MotionScore">The samples' motion scores, prompt by prompt.</param>
/// <param name="MotionMatch">How well the samples' movement matches their captions.</param>
/// <param name="Consistency">The samples' frame-to-frame consistency.</param>
public sealed record QualityDifference(
    [property: JsonPropertyName("validation_loss")] PairedDifference? ValidationLoss,
    [property: JsonPropertyName("motion_score")] PairedDifference? MotionScore,
    [property: JsonPropertyName("motion_match")] PairedDifference? MotionMatch,
    [property: JsonPropertyName("consistency")] PairedDifference? Consistency)
{
    /// <summary>The differences of two topologies' results.</summary>
    public static QualityDifference Of(TopologyResult serial, TopologyResult parallel) => new(
        PairedDifference.Of(serial.ValidationClipLosses, parallel.ValidationClipLosses),
        PairedDifference.Of(serial.SampleScores, parallel.SampleScores),
        PairedDifference.Of(serial.SampleMovement, parallel.SampleMovement),
        PairedDifference.Of(serial.SampleConsistency, parallel.SampleConsistency));
}

/// <summary>
/// Training time to the same validation loss: serial's steps and time until its validation loss first came down to
/// the parallel topology's final one (read off serial's validations, so the step is that of the first validation at
/// or below it: an upper bound, so the ratio is a lower one, as fine as <see cref="ComparisonOptions.ValidateEvery"/>), against the parallel
/// topology's steps and time for all its training. Where the parallel topology is ahead, or never beat the
/// untrained model, there is no serial step and no ratio.
/// </summary>
/// <param name="Loss">The parallel topology's final validation loss (its kept weights', with early stopping).</param>
/// <param name="ParallelStep">The steps the parallel topology trained to reach it.</param>
/// <param name="ParallelMs">Their summed step times, milliseconds.</param>
/// <param name="SerialStep">The first validation step at which serial's loss was at or below it (null: never, in this run).</param>
/// <param name="SerialMs">Serial's summed step times to that step (null: never).</param>
/// <param name="Ratio">ParallelMs / SerialMs: below 1, the parallel topology got there in less time (null: no serial step).</param>
public sealed record TimeToLoss(
    [property: JsonPropertyName("loss")] double Loss,
    [property: JsonPropertyName("parallel_step")] int ParallelStep,
    [property: JsonPropertyName("parallel_ms")] double ParallelMs,
    [property: JsonPropertyName("serial_step")] int? SerialStep,
    [property: JsonPropertyName("serial_ms")] double? SerialMs,
    [property: JsonPropertyName("ratio")] double? Ratio)
{
    /// <summary>Reads it off two topologies' results.</summary>
    public static TimeToLoss Of(TopologyResult serial, TopologyResult parallel)
    {
        ArgumentNullException.ThrowIfNull(serial);
        ArgumentNullException.ThrowIfNull(parallel);
        double loss = parallel.ValidationLoss;
        int parallelStep = parallel.WeightsStep;
        double parallelMs = parallel.StepMs.Take(parallelStep).Sum();
        bool improved = loss < parallel.InitialValidationLoss;
        var reached = improved ? serial.ValidationCurve.FirstOrDefault(v => v.Step > 0 && v.Loss <= loss) : null;
        if (reached is null)
        {
            return new TimeToLoss(loss, parallelStep, parallelMs, null, null, null);
        }

        double serialMs = serial.StepMs.Take(reached.Step).Sum();
        return new TimeToLoss(loss, parallelStep, parallelMs, reached.Step, serialMs, parallelMs / serialMs);
    }
}

/// <summary>One validation during a comparison.</summary>
/// <param name="Step">Steps trained before it (0: the untrained model).</param>
/// <param name="Loss">The validation loss.</param>
public sealed record ValidationPoint(
    [property: JsonPropertyName("step")] int Step,
    [property: JsonPropertyName("loss")] double Loss);

/// <summary>Time of one layer kind in one step, milliseconds.</summary>
/// <param name="ForwardMs">Forward (for "Other": also the loss, the uploads and the gaps between backward nodes; "Data" and "Optimizer" are all forward).</param>
/// <param name="BackwardMs">Backward.</param>
public sealed record KindTime(
    [property: JsonPropertyName("forward_ms")] double ForwardMs,
    [property: JsonPropertyName("backward_ms")] double BackwardMs);

/// <summary>Parallel divided by serial.</summary>
/// <param name="StepMs">Median step time ratio.</param>
/// <param name="PeakBytes">Peak memory ratio.</param>
/// <param name="SavedActivationBytes">Saved-activation ratio.</param>
/// <param name="StepMsMean">Mean step time ratio (warm-up left out): the one to read when the steps differ, as with
/// <see cref="TrainOptions.LoopCorrectionEvery"/>'s exact steps.</param>
public sealed record Ratio(
    [property: JsonPropertyName("step_ms")] double StepMs,
    [property: JsonPropertyName("peak_bytes")] double PeakBytes,
    [property: JsonPropertyName("saved_activation_bytes")] double SavedActivationBytes,
    [property: JsonPropertyName("step_ms_mean")] double StepMsMean);

/// <summary>
/// The checkpoint both topologies of a comparison started from: its file name, its topology ("spatial": a
/// text-to-image model whose temporal layers start at the identity; "serial" or "parallel": a text-to-video
/// model both fine-tune) and the training steps it records.
/// </summary>
public sealed record StartPoint(
    [property: JsonPropertyName("checkpoint")] string Checkpoint,
    [property: JsonPropertyName("topology")] string Topology,
    [property: JsonPropertyName("step")] int Step);

/// <summary>A folder of GIFs a comparison trained and validated on: the folder as given, and its clips in each split.</summary>
public sealed record DataFolderInfo(
    [property: JsonPropertyName("folder")] string Folder,
    [property: JsonPropertyName("train_clips")] int TrainClips,
    [property: JsonPropertyName("validation_clips")] int ValidationClips);

/// <summary>The result of <see cref="Comparison.Run"/>: both topologies from one run, same seed, data and config.</summary>
public sealed record ComparisonResult
{
    /// <summary>Configuration name.</summary>
    [JsonPropertyName("config")]
    public required string Config { get; init; }

    /// <summary>The parallel topology's bridge.</summary>
    [JsonPropertyName("bridge")]
    public string Bridge { get; init; } = ModelConfig.DefaultBridge;

    /// <summary>The motions trained and validated on (null: all, or a folder's GIFs).</summary>
    [JsonPropertyName("motions")]
    public IReadOnlyList<string>? Motions { get; init; }

    /// <summary>The folder of GIFs trained and validated on (null: the generated emoji clips).</summary>
    [JsonPropertyName("data")]
    public DataFolderInfo? Data { get; init; }

    /// <summary>Backend and device.</summary>
    [JsonPropertyName("backend")]
    public required string Backend { get; init; }

    /// <summary>How the backend multiplied: "fp32" (strict), "tf32" or "bf16" (<see cref="IBackend.MathMode"/>).</summary>
    [JsonPropertyName("math")]
    public string MathMode { get; init; } = "fp32";

    /// <summary>
    /// The streams the parallel topology's step ran on: 2 when its spatial chain ran on the backend's second stream
    /// (<see cref="UNet3D.SpatialStream"/>: a ring bridge on a backend with two, <see cref="IBackend.StreamCount"/>), else 1.
    /// </summary>
    [JsonPropertyName("streams")]
    public int Streams { get; init; } = 1;

    /// <summary>What both topologies started from (null: a random text-to-image model).</summary>
    [JsonPropertyName("start")]
    public StartPoint? Start { get; init; }

    /// <summary>Training steps per topology.</summary>
    [JsonPropertyName("steps")]
    public int Steps { get; init; }

    /// <summary>Steps asked for: more than <see cref="Steps"/> when training was stopped early (<see cref="ComparisonOptions.StopTraining"/>).</summary>
    [JsonPropertyName("steps_requested")]
    public int StepsRequested { get; init; }

    /// <summary>Seed.</summary>
    [JsonPropertyName("seed")]
    public int Seed { get; init; }

    /// <summary>Learning rate (the same for both topologies).</summary>
    [JsonPropertyName("learning_rate")]
    public double LearningRate { get; init; }

    /// <summary>The step where the learning rate's cosine decay reaches a tenth (0: constant; see <see cref="TrainOptions.CosineDecaySteps"/>).</summary>
    [JsonPropertyName("cosine_decay_steps")]
    public int CosineDecaySteps { get; init; }

    /// <summary>Clips per training step (the same for both topologies; see <see cref="TrainOptions.Batch"/>).</summary>
    [JsonPropertyName("batch")]
    public int Batch { get; init; }

    /// <summary>Batches accumulated into each step (1: none; see <see cref="TrainOptions.Accumulate"/>).</summary>
    [JsonPropertyName("accumulate")]
    public int Accumulate { get; init; } = 1;

    /// <summary>
    /// Data-parallel ranks per topology (<see cref="TrainOptions.Ranks"/>; 1: none). Step times, memory and the call
    /// profile are rank 0's; every rank holds as much. The frontier and the planned operating points are one rank's.
    /// </summary>
    [JsonPropertyName("ranks")]
    public int Ranks { get; init; } = 1;

    /// <summary>The decay of the weights' moving average both validated and sampled with (0: none; see <see cref="TrainOptions.EmaDecay"/>).</summary>
    [JsonPropertyName("ema_decay")]
    public double EmaDecay { get; init; }

    /// <summary>Min-SNR-gamma loss weighting of both runs (0: plain MSE; see <see cref="TrainOptions.MinSnrGamma"/>).</summary>
    [JsonPropertyName("min_snr_gamma")]
    public double MinSnrGamma { get; init; }

    /// <summary>Whether the frozen spatial layers were recomputed in backward (serial only; see <see cref="TrainOptions.RecomputeSpatial"/>).</summary>
    [JsonPropertyName("recompute_spatial")]
    public bool RecomputeSpatial { get; init; }

    /// <summary>Whether the temporal layers were recomputed in backward, in both topologies (see <see cref="TrainOptions.RecomputeTemporal"/>).</summary>
    [JsonPropertyName("recompute_temporal")]
    public bool RecomputeTemporal { get; init; }

    /// <summary>The element type both topologies kept their frozen weights in, "float32" or "bfloat16" (see <see cref="TrainOptions.FrozenWeights"/>).</summary>
    [JsonPropertyName("frozen_weights")]
    public string FrozenWeights { get; init; } = "float32";

    /// <summary>The element type both topologies kept their activations for backward in, "float32", "bfloat16" or "int8" (see <see cref="TrainOptions.SavedActivations"/>).</summary>
    [JsonPropertyName("saved_activations")]
    public string SavedActivations { get; init; } = "float32";

    /// <summary>The element type of both topologies' AdamW moments, "float32" or "bfloat16" (see <see cref="TrainOptions.OptimizerState"/>).</summary>
    [JsonPropertyName("optimizer_state")]
    public string OptimizerState { get; init; } = "float32";

    /// <summary>Correlation of the diffusion noise across a clip's frames in training.</summary>
    [JsonPropertyName("frame_noise_correlation")]
    public double FrameNoiseCorrelation { get; init; }

    /// <summary>Correlation across a clip's frames of the noise the samples started from (see <see cref="TextToVideo.SampleFrameNoise"/>).</summary>
    [JsonPropertyName("sample_frame_noise")]
    public double SampleFrameNoise { get; init; }

    /// <summary>Classifier-free guidance scale of the samples (<see cref="ComparisonOptions.Guidance"/>).</summary>
    [JsonPropertyName("guidance")]
    public double Guidance { get; init; }

    /// <summary>Steps between the loop bridge's exact, correcting steps (0: off; see <see cref="TrainOptions.LoopCorrectionEvery"/>).</summary>
    [JsonPropertyName("loop_correction_every")]
    public int LoopCorrectionEvery { get; init; }

    /// <summary>The steps at the start that were all exact when <see cref="LoopCorrectionEvery"/> is on (see <see cref="TrainOptions.LoopCorrectionWarmup"/>).</summary>
    [JsonPropertyName("loop_correction_warmup")]
    public int LoopCorrectionWarmup { get; init; }

    /// <summary>The running difference's momentum when <see cref="LoopCorrectionEvery"/> is on.</summary>
    [JsonPropertyName("loop_correction_momentum")]
    public double LoopCorrectionMomentum { get; init; }

    /// <summary>How the exact steps correct the others when <see cref="LoopCorrectionEvery"/> is on: "scale" or "mean".</summary>
    [JsonPropertyName("loop_correction_mode")]
    public string LoopCorrectionMode { get; init; } = "scale";

    /// <summary>Held-out batches in each validation loss.</summary>
    [JsonPropertyName("validation_batches")]
    public int ValidationBatches { get; init; }

    /// <summary>Steps between validations (0: before and after training only; see <see cref="ComparisonOptions.ValidateEvery"/>).</summary>
    [JsonPropertyName("validate_every")]
    public int ValidateEvery { get; init; }

    /// <summary>Whether each topology was sampled and finally validated with its best validation's weights (<see cref="ComparisonOptions.KeepBest"/>).</summary>
    [JsonPropertyName("keep_best")]
    public bool KeepBest { get; init; }

    /// <summary>Temporal layers both topologies kept frozen (name prefixes; null: all trained). See <see cref="TrainOptions.FrozenTemporal"/>.</summary>
    [JsonPropertyName("frozen_temporal")]
    public IReadOnlyList<string>? FrozenTemporal { get; init; }

    /// <summary>The serial baseline.</summary>
    [JsonPropertyName("serial")]
    public required TopologyResult Serial { get; init; }

    /// <summary>The parallel (Mobius) topology.</summary>
    [JsonPropertyName("parallel")]
    public required TopologyResult Parallel { get; init; }

    /// <summary>Parallel / serial.</summary>
    [JsonPropertyName("ratio")]
    public required Ratio Ratio { get; init; }

    /// <summary>Parallel minus serial on each quality measure, paired, with 95 % intervals.</summary>
    [JsonPropertyName("difference")]
    public required QualityDifference Difference { get; init; }

    /// <summary>Serial's training time to the parallel topology's final validation loss, against the parallel topology's.</summary>
    [JsonPropertyName("time_to_parallel_loss")]
    public required TimeToLoss TimeToParallelLoss { get; init; }

    /// <summary>
    /// Both topologies' memory at every recompute policy, planned on the meta backend with this run's config,
    /// batch, bridge and options (<see cref="MemoryPlan.OperatingPoints"/>): the run measures one policy, this
    /// shows the trades at all of them. The engine's own tensors only.
    /// </summary>
    [JsonPropertyName("operating_points")]
    public IReadOnlyList<OperatingPoint>? OperatingPoints { get; init; }

    /// <summary>
    /// Both topologies at every recompute policy, timed with their steps taking turns, when
    /// <see cref="ComparisonOptions.FrontierSteps"/> asked for it (null: not measured).
    /// </summary>
    [JsonPropertyName("frontier")]
    public IReadOnlyList<FrontierPoint>? Frontier { get; init; }

    /// <summary>Sample prompts, in order.</summary>
    [JsonPropertyName("prompts")]
    public required IReadOnlyList<string> Prompts { get; init; }

    /// <summary>JSON form (snake_case keys).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals });
}

/// <summary>Progress of a comparison, for progress bars.</summary>
/// <param name="Phase">"read" (a data folder's GIFs, checked before training), "train", "validate", "validated" (a validation during training: <paramref name="Loss"/> is its loss, <paramref name="Done"/> its step) or "sample".</param>
/// <param name="Topology">The topology being worked on.</param>
/// <param name="Done">Units done in this phase.</param>
/// <param name="Total">Units in this phase.</param>
/// <param name="Loss">The latest training loss, when training; the validation loss, when validated.</param>
public sealed record CompareProgress(string Phase, Topology Topology, int Done, int Total, float Loss = float.NaN);

/// <summary>
/// Serial against parallel, in one process: both start from the same text-to-image weights and the
/// same temporal initialisation, see the same batches, and their training steps alternate so that any
/// drift of the machine's speed affects both alike. Each has its own backend instance, so memory is
/// accounted separately. The serial baseline gets every saving the engine has (frozen layers keep no
/// weight-gradient inputs, cheap recomputation); only the topology differs.
/// </summary>
public static class Comparison
{
    /// <summary>Runs the comparison; samples (pixels [prompts, F, 3, H, W]) are handed to <paramref name="onSamples"/> as they are made.</summary>
    public static ComparisonResult Run(ComparisonOptions options, IProgress<CompareProgress>? progress = null,
        Action<Topology, ModelConfig, IReadOnlyList<string>, float[]>? onSamples = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(options.FrontierSteps);
        var (result, config) = RunPair(options, progress, onSamples);
        if (options.FrontierSteps == 0 || options.StopTraining.IsCancellationRequested)
        {
            return result;
        }

        // The pair's models are released by now: the frontier's own cases have the memory to themselves.
        progress?.Report(new CompareProgress("frontier", Topology.Serial, 0, 1));
        var frontier = Frontier.Measure(config, options.BackendFactory, options.Train with { Seed = options.Seed, Ranks = 1 }, options.FrontierSteps,
            options.WarmupSteps, options.FrontierTogether,
            progress is null ? null : new InlineProgress<(int Done, int Total)>(p => progress.Report(new CompareProgress("frontier", Topology.Serial, p.Done, p.Total))));
        return result with { Frontier = frontier };
    }

    private static (ComparisonResult Result, ModelConfig Config) RunPair(ComparisonOptions options, IProgress<CompareProgress>? progress,
        Action<Topology, ModelConfig, IReadOnlyList<string>, float[]>? onSamples)
    {
        var checkpoint = options.Checkpoint is null ? null : Training.Checkpoint.Load(options.Checkpoint);
        var config = (checkpoint?.Config ?? options.Config) with
        {
            Bridge = options.Bridge,
            // A text-to-video checkpoint keeps the frame noise it was trained with unless told otherwise.
            FrameNoiseCorrelation = options.FrameNoiseCorrelation
                ?? (checkpoint is { Topology: not Topology.Spatial } ? checkpoint.Config.FrameNoiseCorrelation : ModelConfig.DefaultFrameNoiseCorrelation),
        };
        config.Validate();
        if (options.ValidateEvery < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"ValidateEvery must be 0 or more steps, got {options.ValidateEvery}.");
        }

        if (options.ValidationBatches < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"ValidationBatches must be at least 1, got {options.ValidationBatches}.");
        }

        if (!(options.Guidance >= 0 && float.IsFinite(options.Guidance)))
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"Guidance must be 0 or more, got {options.Guidance}.");
        }

        // The samples' starting-noise correlation, checked here rather than after training (both topologies share the config).
        float sampleFrameNoise = TextToVideo.SampleFrameNoiseFor(Topology.Serial, config, options.SampleFrameNoise);

        if (options.KeepBest && options.ValidateEvery == 0)
        {
            throw new ArgumentException("KeepBest needs ValidateEvery: without validations during training there is no best step to go back to.", nameof(options));
        }

        if (options.DataFolder is not null && options.Motions is not null)
        {
            throw new ArgumentException("Motions selects generated clips; a DataFolder's GIFs are used as they are.", nameof(options));
        }

        // A folder is opened and checked once, before any backend exists; both topologies read the same clips.
        var folder = options.DataFolder is null ? null : OpenFolder(options.DataFolder, config);
        var folderTrain = folder?.Subset(Split.Train);
        var folderValidation = folder?.Subset(Split.Validation);
        if (folder is not null)
        {
            folder.CheckCaptions(checkpoint is null ? Tokenizer.ForEmoji(config.TokenLength) : Tokenizer.FromVocabulary(checkpoint.Vocabulary, config.TokenLength));
            progress?.Report(new CompareProgress("read", Topology.Serial, 0, folder.Count));
            folder.Verify();
            progress?.Report(new CompareProgress("read", Topology.Serial, folder.Count, folder.Count));
        }

        var topologies = new[] { Topology.Serial, Topology.Parallel };
        var backends = topologies.Select(_ => options.BackendFactory()).ToArray();
        var models = new TextToVideo?[2];
        var trainers = new Trainer?[2];
        var ranks = new RankReplicas?[2];
        try
        {
            // The temporal layers are initialised from the same seed in both; the spatial weights come
            // from the checkpoint, or from a shared random text-to-image model.
            Dictionary<string, float[]>? spatial = null;
            Dictionary<string, float[]>? text = null;
            if (checkpoint is null)
            {
                using var t2i = TextToVideo.Create(backends[0], config, Topology.Spatial, options.Seed);
                spatial = t2i.Unet.StateDict();
                text = t2i.Text.StateDict();
            }

            for (int i = 0; i < 2; i++)
            {
                var topology = topologies[i];
                TextToVideo Model(IBackend backend)
                {
                    var model = checkpoint is not null
                        ? TextToVideo.Load(backend, checkpoint, topology, options.Seed, options.Bridge, options.FrameNoiseCorrelation)
                        : TextToVideo.Create(backend, config, topology, options.Seed);
                    if (spatial is not null)
                    {
                        model.Unet.LoadStateDict(spatial, strict: false);
                        model.Text.LoadStateDict(text!);
                    }

                    return model;
                }

                models[i] = Model(backends[i]);
                ranks[i] = RankReplicas.Create(options, backends[i], Model);
                trainers[i] = new Trainer(models[i]!, ranks[i]!.Models, folderTrain ?? Data(config, options.Seed, Split.Train, options.Motions), Stage.TextToVideo,
                    options.Train with { Seed = options.Seed }, ranks[i]!.Collectives);
            }

            // Where both start: the zero-initialised temporal outputs make each the frozen text-to-image model.
            var validation = folderValidation ?? Data(config, options.Seed, Split.Validation, options.Motions);
            // Every validation's loss (the curve) and, in the same order, its losses clip by clip.
            var initialValidation = new double[2];
            var clipCurves = new List<List<double>>[] { [[]], [[]] };
            for (int i = 0; i < 2; i++)
            {
                progress?.Report(new CompareProgress("validate", topologies[i], 0, 1));
                using (trainers[i]!.EmaWeights())
                {
                    initialValidation[i] = trainers[i]!.Evaluate(validation, options.ValidationBatches, options.Seed, clipCurves[i][0]);
                }
            }

            var curves = new List<ValidationPoint>[] { [new(0, initialValidation[0])], [new(0, initialValidation[1])] };
            var bestWeights = new Dictionary<string, float[]>?[2];
            for (int i = 0; i < 2; i++)
            {
                bestWeights[i] = options.KeepBest ? trainers[i]!.TrainableSnapshot() : null;
            }

            // Validates topology i after `step` steps (with its EMA weights, when it keeps an EMA); keeps those
            // weights when they are the best so far.
            void Validate(int i, int step)
            {
                using var ema = trainers[i]!.EmaWeights();
                var clips = new List<double>();
                double loss = trainers[i]!.Evaluate(validation, options.ValidationBatches, options.Seed, clips);
                if (options.KeepBest && loss < curves[i].Min(v => v.Loss))
                {
                    bestWeights[i] = trainers[i]!.TrainableSnapshot();
                }

                curves[i].Add(new ValidationPoint(step, loss));
                clipCurves[i].Add(clips);
                progress?.Report(new CompareProgress("validated", topologies[i], step, options.Steps, (float)loss));
            }

            var stats = new List<StepStats>[] { new(), new() };
            int steps = 0;
            for (int step = 1; step <= options.Steps; step++)
            {
                if (step > 1 && options.StopTraining.IsCancellationRequested)
                {
                    break;
                }

                steps = step;
                for (int i = 0; i < 2; i++)
                {
                    var s = trainers[i]!.TrainStep();
                    stats[i].Add(s);
                    progress?.Report(new CompareProgress("train", topologies[i], step, options.Steps, s.Loss));
                }

                if (options.ValidateEvery > 0 && step % options.ValidateEvery == 0 && step < options.Steps)
                {
                    for (int i = 0; i < 2; i++)
                    {
                        Validate(i, step);
                    }
                }
            }

            var prompts = SamplePrompts(validation, options.SamplePrompts);
            var results = new TopologyResult[2];
            for (int i = 0; i < 2; i++)
            {
                progress?.Report(new CompareProgress("validate", topologies[i], 0, 1));
                if (curves[i][^1].Step != steps)
                {
                    Validate(i, steps);
                }

                var best = curves[i].MinBy(v => v.Loss)!;
                var final = curves[i][^1];
                bool restored = options.KeepBest && best.Step != steps;
                if (restored)
                {
                    // The best weights (the EMA's, with an EMA) go into the model: sampled as they are.
                    trainers[i]!.RestoreTrainable(bestWeights[i]!);
                    final = best;
                }

                bestWeights[i] = null;
                double validationLoss = final.Loss;
                var validationClips = clipCurves[i][curves[i].IndexOf(final)];
                var scores = new List<MotionScore?>();
                if (prompts.Count > 0)
                {
                    int ti = i;
                    var bar = new InlineProgress<int>(d => progress?.Report(new CompareProgress("sample", topologies[ti], d, options.SampleSteps)));
                    float[] pixels;
                    using (restored ? null : trainers[i]!.EmaWeights())
                    {
                        pixels = models[i]!.Generate(prompts.Select(p => p.Caption).ToList(), options.SampleSteps, options.Guidance, options.Seed, bar, sampleFrameNoise);
                    }

                    int clipSize = config.Frames * 3 * config.Height * config.Width;
                    for (int k = 0; k < prompts.Count; k++)
                    {
                        // A caption that names no known motion (a folder's GIF) is sampled but not scored.
                        scores.Add(MotionMetric.MotionOf(prompts[k]) is { } motion
                            ? MotionMetric.Score(pixels.AsSpan(k * clipSize, clipSize), config.Frames, config.Height, config.Width, motion)
                            : null);
                    }

                    onSamples?.Invoke(topologies[i], config, prompts.Select(p => p.Caption).ToList(), pixels);
                }

                results[i] = Summarise(stats[i], options, trainers[i]!.TrainableParameters, initialValidation[i], validationLoss, scores) with
                {
                    ValidationClipLosses = validationClips,
                    ValidationCurve = curves[i],
                    BestValidationStep = best.Step,
                    BestValidationLoss = best.Loss,
                    WeightsStep = final.Step,
                    LoopCoefficients = trainers[i]!.LoopCoefficients() is { Count: > 0 } coefficients ? coefficients : null,
                };
                if (options.ProfileSteps > 0)
                {
                    var (byKind, calls, callMs) = Profile(trainers[i]!, backends[i], options.ProfileSteps, topologies[i], progress);
                    results[i] = results[i] with { TimeByKind = byKind, CallsPerStep = calls, CallMsPerStep = callMs };
                }
            }

            return (new ComparisonResult
            {
                Config = config.Name,
                Bridge = config.Bridge,
                Motions = options.Motions?.Select(m => m.ToString()).ToList(),
                Data = folder is null ? null : new DataFolderInfo(options.DataFolder!, folderTrain!.Count, folderValidation!.Count),
                Backend = backends[0].DeviceName,
                MathMode = backends[0].MathMode,
                Streams = models[Array.IndexOf(topologies, Topology.Parallel)]!.Unet.StreamsUsed,
                Steps = steps,
                StepsRequested = options.Steps,
                Seed = options.Seed,
                LearningRate = options.Train.LearningRate,
                Batch = trainers[0]!.BatchSize,
                Accumulate = options.Train.Accumulate,
                Ranks = options.Train.Ranks,
                CosineDecaySteps = options.Train.CosineDecaySteps,
                EmaDecay = Math.Round(options.Train.EmaDecay, 6),
                MinSnrGamma = options.Train.MinSnrGamma,
                FrozenTemporal = options.Train.FrozenTemporal is { Count: > 0 } frozen ? frozen : null,
                LoopCorrectionEvery = options.Train.LoopCorrectionEvery,
                LoopCorrectionMomentum = options.Train.LoopCorrectionMomentum,
                LoopCorrectionWarmup = options.Train.LoopCorrectionEvery > 0 ? options.Train.LoopCorrectionWarmup : 0,
                LoopCorrectionMode = options.Train.LoopCorrectionMode.ToString().ToLowerInvariant(),
                ValidateEvery = options.ValidateEvery,
                ValidationBatches = options.ValidationBatches,
                KeepBest = options.KeepBest,
                RecomputeSpatial = options.Train.RecomputeSpatial,
                RecomputeTemporal = options.Train.RecomputeTemporal,
                FrozenWeights = options.Train.FrozenWeights.Name(),
                SavedActivations = options.Train.SavedActivations.Name(),
                OptimizerState = options.Train.OptimizerState.Name(),
                FrameNoiseCorrelation = Math.Round(config.FrameNoiseCorrelation, 4),
                SampleFrameNoise = Math.Round(sampleFrameNoise, 4),
                Guidance = options.Guidance,
                Start = checkpoint is null ? null : new StartPoint(Path.GetFileName(options.Checkpoint!), checkpoint.Topology.ToString().ToLowerInvariant(), checkpoint.Step),
                Serial = results[0],
                Parallel = results[1],
                Ratio = new Ratio(
                    results[1].StepMsMedian / results[0].StepMsMedian,
                    (double)results[1].PeakBytes / results[0].PeakBytes,
                    (double)results[1].SavedActivationBytes / results[0].SavedActivationBytes,
                    results[1].StepMsMean / results[0].StepMsMean),
                Difference = QualityDifference.Of(results[0], results[1]),
                TimeToParallelLoss = TimeToLoss.Of(results[0], results[1]),
                Prompts = prompts.Select(p => p.Caption).ToList(),
                OperatingPoints = MemoryPlan.OperatingPoints(config, options.Train with { Seed = options.Seed, Ranks = 1 }),
            }, config);
        }
        finally
        {
            for (int i = 0; i < 2; i++)
            {
                trainers[i]?.Dispose();
                ranks[i]?.Dispose();
                models[i]?.Dispose();
                backends[i].Dispose();
            }
        }
    }

    /// <summary>A topology's ranks 1 and up (<see cref="TrainOptions.Ranks"/>): their backends, models and collectives.</summary>
    private sealed class RankReplicas : IDisposable
    {
        private readonly List<IBackend> _backends = [];
        private readonly List<TextToVideo> _models = [];

        public IReadOnlyList<TextToVideo> Models => _models;

        public ICollectives? Collectives { get; private set; }

        /// <summary>Opens ranks 1 to Ranks - 1 beside rank 0's backend, each with a model from <paramref name="model"/>.</summary>
        public static RankReplicas Create(ComparisonOptions options, IBackend rank0, Func<IBackend, TextToVideo> model)
        {
            var set = new RankReplicas();
            if (options.Train.Ranks <= 1)
            {
                return set;
            }

            try
            {
                for (int r = 1; r < options.Train.Ranks; r++)
                {
                    set._backends.Add(options.RankBackendFactory?.Invoke(r) ?? options.BackendFactory());
                    set._models.Add(model(set._backends[^1]));
                }

                set.Collectives = options.CollectivesFactory?.Invoke([rank0, .. set._backends]) ?? new HostCollectives();
                return set;
            }
            catch
            {
                set.Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            (Collectives as IDisposable)?.Dispose();
            Collectives = null;
            _models.ForEach(m => m.Dispose());
            _models.Clear();
            _backends.ForEach(b => b.Dispose());
            _backends.Clear();
        }
    }

    private static (Dictionary<string, KindTime> ByKind, Dictionary<string, double>? Calls, Dictionary<string, double>? CallMs) Profile(Trainer trainer, IBackend backend, int steps, Topology topology,
        IProgress<CompareProgress>? progress)
    {
        int total = backend.CallMilliseconds is null ? steps : 2 * steps; // a backend that times calls takes steps again for that
        var profiler = new KindProfiler(backend.Synchronize);
        var before = Tape.Profiler;
        Tape.Profiler = profiler;
        try
        {
            profiler.Reset();
            backend.ResetCallCounts();
            progress?.Report(new CompareProgress("profile", topology, 0, total));
            for (int k = 0; k < steps; k++)
            {
                trainer.TrainStep();
                progress?.Report(new CompareProgress("profile", topology, k + 1, total));
            }

            profiler.Flush();  // the last optimizer step
        }
        finally
        {
            Tape.Profiler = before;
        }

        var calls = backend.CallCounts?.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .ToDictionary(kv => kv.Key, kv => (double)kv.Value / steps);
        var byKind = profiler.Milliseconds.ToDictionary(kv => kv.Key, kv => new KindTime(kv.Value.Forward / steps, kv.Value.Backward / steps));

        // Then as many steps again with each call timed on the device (apart: the events cost host time per call).
        Dictionary<string, double>? callMs = null;
        backend.ResetCallCounts();
        using (var timing = backend.TimeCalls())
        {
            if (timing is not null)
            {
                for (int k = 0; k < steps; k++)
                {
                    trainer.TrainStep();
                    progress?.Report(new CompareProgress("profile", topology, steps + k + 1, total));
                }

                callMs = backend.CallMilliseconds?.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
                    .ToDictionary(kv => kv.Key, kv => kv.Value / steps);
            }
        }

        return (byKind, calls, callMs);
    }

    /// <summary>The emoji clips of a split, sized for <paramref name="config"/>.</summary>
    public static EmojiClips Data(ModelConfig config, int seed, Split split, IReadOnlyList<Motion>? motions = null) =>
        new(new EmojiClipsOptions { Seed = seed, Frames = config.Frames, Height = config.Height, Width = config.Width, Split = split, Motions = motions });

    /// <summary>A folder of GIFs read at the config's clip size.</summary>
    public static GifFolderClips OpenFolder(string folder, ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new GifFolderClips(folder, config.Frames, config.Height, config.Width);
    }

    /// <summary>
    /// <paramref name="count"/> clips of the source, one per motion first; when there are fewer motions than
    /// that (a run on one motion), further clips of other (sprite, colour, motion) combinations. Clips without a
    /// label (a folder's GIFs) are picked by caption: first those whose caption names a motion (so they can be
    /// scored), then any other, each caption once. When the distinct captions run out before
    /// <paramref name="count"/>, they are taken again in the same order: each repeat is sampled from its own
    /// starting noise, so it is another sample of that caption (and another pair for the paired differences).
    /// </summary>
    private static List<Clip> SamplePrompts(IClipSource source, int count)
    {
        var distinct = DistinctPrompts(source, count);
        var prompts = new List<Clip>(distinct);
        for (int k = 0; distinct.Count > 0 && prompts.Count < count; k++)
        {
            prompts.Add(distinct[k % distinct.Count]);
        }

        return prompts;
    }

    private static List<Clip> DistinctPrompts(IClipSource source, int count)
    {
        if (source.Count > 0 && source.Get(0).Label is null)
        {
            var byCaption = new List<Clip>();
            var captions = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < source.Count; i++)
            {
                var clip = source.Get(i);
                if (captions.Add(clip.Caption))
                {
                    byCaption.Add(clip);
                }
            }

            return [.. byCaption.OrderBy(c => MotionMetric.MotionOf(c) is null).Take(count)];
        }

        var picked = new List<Clip>();
        var motions = new HashSet<Motion>();
        var labels = new HashSet<ClipLabel>();
        int scan = Math.Min(source.Count, 512);
        for (int pass = 0; pass < 2; pass++)
        {
            for (int i = 0; i < scan && picked.Count < count; i++)
            {
                var clip = source.Get(i);
                if (clip.Label is { } label && !labels.Contains(label) && (pass == 1 || motions.Add(label.Motion)))
                {
                    labels.Add(label);
                    picked.Add(clip);
                }
            }
        }

        return picked;
    }

    private static TopologyResult Summarise(List<StepStats> stats, ComparisonOptions o, long trainable, double initialValidationLoss, double validationLoss,
        List<MotionScore?> sampled)
    {
        var scores = sampled.OfType<MotionScore>().ToList();
        var measured = stats.Skip(Math.Min(o.WarmupSteps, stats.Count - 1)).ToList();
        var times = measured.Select(s => s.Milliseconds).ToList();
        double median = Frontier.Median(times);
        var peak = stats.MaxBy(s => s.Memory.PeakBytes)!;
        int tail = Math.Max(1, stats.Count / 10);
        return new TopologyResult
        {
            StepMsMedian = median,
            StepMsMean = times.Average(),
            PeakBytes = peak.Memory.PeakBytes,
            PeakReservedBytes = measured.Max(s => s.Memory.PeakReservedBytes),
            SavedActivationBytes = stats.Max(s => s.SavedActivationBytes),
            TrainableParams = trainable,
            FinalLoss = stats.TakeLast(tail).Average(s => s.Loss),
            InitialValidationLoss = initialValidationLoss,
            ValidationLoss = validationLoss,
            MotionScore = scores.Count > 0 ? scores.Average(m => m.Combined) : null,
            MotionMatch = scores.Count > 0 ? scores.Average(m => m.Motion) : null,
            Consistency = scores.Count > 0 ? scores.Average(m => m.Consistency) : null,
            Memory = peak.Memory.AtPeak.ToDictionary(kv => ToSnake(kv.Key.ToString()), kv => kv.Value),
            SavedByKind = stats[^1].SavedByKind,
            SavedByOp = stats[^1].SavedByOp,
            Losses = stats.Select(s => (double)s.Loss).ToList(),
            StepMs = stats.Select(s => s.Milliseconds).ToList(),
            SampleScores = sampled.Select(m => m?.Combined).ToList(),
            SampleMovement = sampled.Select(m => m?.Motion).ToList(),
            SampleConsistency = sampled.Select(m => m?.Consistency).ToList(),
        };
    }

    internal static string ToSnake(string name) =>
        string.Concat(name.Select((ch, i) => char.IsUpper(ch) ? (i > 0 ? "_" : "") + char.ToLowerInvariant(ch) : ch.ToString()));
}
