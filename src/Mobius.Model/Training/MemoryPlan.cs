using System.Text.Json;
using System.Text.Json.Serialization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;

namespace Mobius.Model.Training;

/// <summary>
/// What a stage-2 training step of each topology needs, planned without a device: both models are built
/// on a dry-run <see cref="MetaBackend"/> and take real training steps there (data, forward, backward,
/// AdamW), so every tensor is allocated and released exactly as on the CPU or a GPU while nothing is
/// computed. The engine's memory tracker then gives the peak by category and the tape the bytes kept for
/// backward, for any config and batch, in seconds. What a device adds on top (a library's workspace, the
/// allocator's cache, the CUDA context) is not in it.
/// </summary>
public static class MemoryPlan
{
    /// <summary>
    /// Plans <paramref name="stepCount"/> training steps of each topology of <paramref name="config"/> under
    /// <paramref name="options"/> (recomputation, frozen temporal layers) and keeps each one's largest step;
    /// with <see cref="TrainOptions.LoopCorrectionEvery"/> = K, at least K + 1 steps, so that an exact step
    /// after the first optimizer step is among them.
    /// </summary>
    public static MemoryPlanResult Plan(ModelConfig config, TrainOptions options, int stepCount = 2)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(stepCount, 1);

        stepCount = StepCount(options, stepCount);
        var plans = new[] { Topology.Serial, Topology.Parallel }.Select(t => PlanTopology(config, options, t, stepCount)).ToList();
        return new MemoryPlanResult(config.Name, options.BatchFor(config), config.Bridge, options.RecomputeSpatial, options.RecomputeTemporal, plans[0], plans[1],
            (double)plans[1].PeakBytes / plans[0].PeakBytes, (double)plans[1].SavedActivationBytes / plans[0].SavedActivationBytes)
        {
            Frames = config.Frames,
            Height = config.Height,
            Width = config.Width,
            FrozenWeights = options.FrozenWeights.Name(),
            SavedActivations = options.SavedActivations.Name(),
            OptimizerState = options.OptimizerState.Name(),
        };
    }

    /// <summary>
    /// At least <paramref name="stepCount"/> steps; with the loop correction at least K + 1: its first step is exact
    /// before the optimizer holds any state, and the step that peaks is a later exact one, with Adam's moments (and
    /// the mean mode's buffer) allocated.
    /// </summary>
    private static int StepCount(TrainOptions options, int stepCount) =>
        options.LoopCorrectionEvery > 0 ? Math.Max(stepCount, options.LoopCorrectionEvery + 1) : stepCount;

    private static TopologyPlan PlanTopology(ModelConfig config, TrainOptions options, Topology topology, int stepCount)
    {
        using var meta = new MetaBackend(dryRun: true);
        using var model = TextToVideo.Create(meta, config, topology, options.Seed);
        using var trainer = new Trainer(model, Comparison.Data(config, options.Seed, Split.Train), Stage.TextToVideo, options with { CheckFinite = false });
        var steps = Enumerable.Range(0, stepCount).Select(_ => trainer.TrainStep()).ToList();
        var largest = steps.MaxBy(s => s.Memory.PeakBytes)!; // as a comparison reports it
        return new TopologyPlan(
            largest.Memory.PeakBytes,
            steps.Max(s => s.SavedActivationBytes),
            trainer.TrainableParameters,
            largest.Memory.AtPeak.ToDictionary(kv => Comparison.ToSnake(kv.Key.ToString()), kv => kv.Value),
            largest.SavedByKind)
        {
            PeakBlockBytes = steps.Max(s => s.Memory.PeakBlockBytes),
            SavedByOp = largest.SavedByOp,
        };
    }

    /// <summary>
    /// The largest batch (clips a step) whose planned peak (<see cref="Plan"/>, the other settings as in
    /// <paramref name="options"/>), counted in the caching allocator's blocks (<see cref="TopologyPlan.PeakBlockBytes"/>:
    /// what the device must hold), stays within <paramref name="budgetBytes"/>, for each topology, up to
    /// <paramref name="maxBatch"/>; 0 where even one clip does not fit. The peak grows with the batch, so the
    /// search doubles the batch until it no longer fits, then halves the gap: about 2 log2(batch) plans per topology.
    /// </summary>
    public static (int Serial, int Parallel) LargestBatch(ModelConfig config, TrainOptions options, long budgetBytes, int maxBatch = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(budgetBytes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBatch);
        int stepCount = StepCount(options, 2);
        int Largest(Topology topology)
        {
            bool Fits(int batch) => PlanTopology(config, options with { Batch = batch }, topology, stepCount).PeakBlockBytes <= budgetBytes;
            if (!Fits(1))
            {
                return 0;
            }

            int good = 1, bad = 2;
            while (bad <= maxBatch && Fits(bad))
            {
                good = bad;
                bad *= 2;
            }

            bad = Math.Min(bad, maxBatch + 1);
            while (bad - good > 1)
            {
                int mid = good + ((bad - good) / 2);
                if (Fits(mid))
                {
                    good = mid;
                }
                else
                {
                    bad = mid;
                }
            }

            return good;
        }

        return (Largest(Topology.Serial), Largest(Topology.Parallel));
    }

    /// <summary>The recompute policies <see cref="OperatingPoints"/> plans, from the fastest to the leanest.</summary>
    public static IReadOnlyList<(bool Spatial, bool Temporal)> Policies { get; } = [(false, false), (false, true), (true, false), (true, true)];

    /// <summary>A recompute policy's name: "none", "temporal", "spatial" or "spatial+temporal".</summary>
    public static string PolicyName(bool spatial, bool temporal) => (spatial, temporal) switch
    {
        (false, false) => "none",
        (false, true) => "temporal",
        (true, false) => "spatial",
        _ => "spatial+temporal",
    };

    /// <summary>
    /// Plans both topologies at every recompute policy (<see cref="Policies"/>), the other settings as in
    /// <paramref name="options"/>: the time-for-memory trades each topology has. Recomputing changes no gradient,
    /// only memory and time, so a comparison run at one policy tells where the others would put each topology's
    /// memory; their step times need runs of their own. The parallel topology keeps no spatial activation, so
    /// "spatial" changes nothing for it (outside the loop correction's exact steps).
    /// </summary>
    public static IReadOnlyList<OperatingPoint> OperatingPoints(ModelConfig config, TrainOptions options)
    {
        var points = new List<OperatingPoint>(Policies.Count);
        foreach (var (spatial, temporal) in Policies)
        {
            var plan = Plan(config, options with { RecomputeSpatial = spatial, RecomputeTemporal = temporal });
            points.Add(new OperatingPoint(
                PolicyName(spatial, temporal),
                new PlannedMemory(plan.Serial.PeakBytes, plan.Serial.SavedActivationBytes),
                new PlannedMemory(plan.Parallel.PeakBytes, plan.Parallel.SavedActivationBytes),
                new PlannedRatio(plan.PeakRatio, plan.SavedRatio)));
        }

        return points;
    }

    /// <summary>
    /// Each topology at its own lowest planned peak among <paramref name="points"/> (on a tie, the policy that
    /// recomputes less, the earlier one in <see cref="Policies"/>): the two topologies as a memory-bound user runs them.
    /// </summary>
    public static (OperatingPoint Serial, OperatingPoint Parallel) LeastPeak(IReadOnlyList<OperatingPoint> points)
    {
        ArgumentOutOfRangeException.ThrowIfZero(points.Count);
        return (points.MinBy(p => p.Serial.PeakBytes)!, points.MinBy(p => p.Parallel.PeakBytes)!);
    }
}

/// <summary>The plan of one topology.</summary>
/// <param name="PeakBytes">Peak bytes of the largest step.</param>
/// <param name="SavedActivationBytes">Most bytes the tape held for backward.</param>
/// <param name="TrainableParams">Trainable parameters.</param>
/// <param name="AtPeak">Bytes by memory category at the moment of the peak.</param>
/// <param name="SavedByKind">Saved bytes by layer kind.</param>
public sealed record TopologyPlan(
    [property: JsonPropertyName("peak_bytes")] long PeakBytes,
    [property: JsonPropertyName("saved_activation_bytes")] long SavedActivationBytes,
    [property: JsonPropertyName("trainable_params")] long TrainableParams,
    [property: JsonPropertyName("memory")] IReadOnlyDictionary<string, long> AtPeak,
    [property: JsonPropertyName("saved_by_kind")] IReadOnlyDictionary<string, long> SavedByKind)
{
    /// <summary>Of <see cref="SavedByKind"/>, the frozen spatial layers' bytes (<see cref="UNet3D.FrozenSpatialKinds"/>).</summary>
    [JsonPropertyName("saved_frozen_spatial_bytes")]
    public long SavedFrozenSpatialBytes => UNet3D.SplitSaved(SavedByKind).Frozen;

    /// <summary>
    /// The peak counted in the caching allocator's blocks: each tensor rounded up to its size class (under 2 MiB more
    /// for a large one, at most an eighth for a small one). What the device must hold for the engine's tensors.
    /// </summary>
    [JsonPropertyName("peak_block_bytes")]
    public long PeakBlockBytes { get; init; }

    /// <summary>
    /// The saved bytes by layer kind and op at the start of the largest step's backward, largest first
    /// (<see cref="Tape.StatsByOp"/>): which ops keep what.
    /// </summary>
    [JsonPropertyName("saved_by_op")]
    public IReadOnlyList<TapeOpStats> SavedByOp { get; init; } = [];
}

/// <summary>The plan of both topologies and their ratios (parallel / serial).</summary>
public sealed record MemoryPlanResult(
    [property: JsonPropertyName("config")] string Config,
    [property: JsonPropertyName("batch")] int Batch,
    [property: JsonPropertyName("bridge")] string Bridge,
    [property: JsonPropertyName("recompute_spatial")] bool RecomputeSpatial,
    [property: JsonPropertyName("recompute_temporal")] bool RecomputeTemporal,
    [property: JsonPropertyName("serial")] TopologyPlan Serial,
    [property: JsonPropertyName("parallel")] TopologyPlan Parallel,
    [property: JsonPropertyName("peak_ratio")] double PeakRatio,
    [property: JsonPropertyName("saved_ratio")] double SavedRatio)
{
    /// <summary>The element type of the frozen weights planned, "float32" or "bfloat16" (<see cref="TrainOptions.FrozenWeights"/>).</summary>
    [JsonPropertyName("frozen_weights")]
    public string FrozenWeights { get; init; } = "float32";

    /// <summary>The element type of the activations kept for backward, "float32", "bfloat16" or "int8" (<see cref="TrainOptions.SavedActivations"/>).</summary>
    [JsonPropertyName("saved_activations")]
    public string SavedActivations { get; init; } = "float32";

    /// <summary>The element type of the AdamW moments planned, "float32" or "bfloat16" (<see cref="TrainOptions.OptimizerState"/>).</summary>
    [JsonPropertyName("optimizer_state")]
    public string OptimizerState { get; init; } = "float32";

    /// <summary>Frames per clip of the planned config.</summary>
    [JsonPropertyName("frames")]
    public int Frames { get; init; }

    /// <summary>Clip height in pixels of the planned config.</summary>
    [JsonPropertyName("height")]
    public int Height { get; init; }

    /// <summary>Clip width in pixels of the planned config.</summary>
    [JsonPropertyName("width")]
    public int Width { get; init; }

    /// <summary>Each topology's largest batch within a memory budget (<see cref="MemoryPlan.LargestBatch"/>), when the caller searched for it; else null.</summary>
    [JsonPropertyName("largest_batch")]
    public LargestBatchPlan? LargestBatch { get; init; }

    /// <summary>Both topologies at every recompute policy (<see cref="MemoryPlan.OperatingPoints"/>), when the caller planned them too; else null.</summary>
    [JsonPropertyName("operating_points")]
    public IReadOnlyList<OperatingPoint>? OperatingPoints { get; init; }

    /// <summary>Indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>The largest batch of each topology whose planned peak fits a budget (0: not even one clip).</summary>
/// <param name="BudgetBytes">The budget.</param>
/// <param name="Serial">The serial topology's largest batch.</param>
/// <param name="Parallel">The parallel topology's largest batch.</param>
public sealed record LargestBatchPlan(
    [property: JsonPropertyName("budget_bytes")] long BudgetBytes,
    [property: JsonPropertyName("serial")] int Serial,
    [property: JsonPropertyName("parallel")] int Parallel);

/// <summary>Planned memory of one topology at one recompute policy.</summary>
/// <param name="PeakBytes">Peak bytes of the largest step.</param>
/// <param name="SavedActivationBytes">Most bytes the tape held for backward.</param>
public sealed record PlannedMemory(
    [property: JsonPropertyName("peak_bytes")] long PeakBytes,
    [property: JsonPropertyName("saved_activation_bytes")] long SavedActivationBytes);

/// <summary>Parallel / serial of two <see cref="PlannedMemory"/>.</summary>
/// <param name="PeakBytes">Peak ratio.</param>
/// <param name="SavedActivationBytes">Saved-activation ratio.</param>
public sealed record PlannedRatio(
    [property: JsonPropertyName("peak_bytes")] double PeakBytes,
    [property: JsonPropertyName("saved_activation_bytes")] double SavedActivationBytes);

/// <summary>Both topologies' planned memory at one recompute policy (<see cref="MemoryPlan.OperatingPoints"/>).</summary>
/// <param name="Recompute">The policy: "none", "temporal", "spatial" or "spatial+temporal" (<see cref="MemoryPlan.PolicyName"/>).</param>
/// <param name="Serial">The serial topology.</param>
/// <param name="Parallel">The parallel topology.</param>
/// <param name="Ratio">Parallel / serial at the same policy.</param>
public sealed record OperatingPoint(
    [property: JsonPropertyName("recompute")] string Recompute,
    [property: JsonPropertyName("serial")] PlannedMemory Serial,
    [property: JsonPropertyName("parallel")] PlannedMemory Parallel,
    [property: JsonPropertyName("ratio")] PlannedRatio Ratio);
