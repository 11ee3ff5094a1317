using System.Globalization;
using System.Text.Json.Serialization;
using Mobius.Data;
using Mobius.Engine;

namespace Mobius.Model.Training;

/// <summary>One topology at one recompute policy, measured by <see cref="Frontier.Measure"/>.</summary>
/// <param name="Recompute">The policy (<see cref="MemoryPlan.PolicyName"/>).</param>
/// <param name="Topology">Serial or parallel.</param>
/// <param name="StepMsMedian">Median training-step time.</param>
/// <param name="PeakBytes">Peak bytes of the last measured step.</param>
/// <param name="SavedActivationBytes">Bytes the tape held for backward in the last measured step.</param>
public sealed record FrontierPoint(
    [property: JsonPropertyName("recompute")] string Recompute,
    [property: JsonPropertyName("topology"), JsonConverter(typeof(JsonStringEnumConverter<Topology>))] Topology Topology,
    [property: JsonPropertyName("step_ms_median")] double StepMsMedian,
    [property: JsonPropertyName("peak_bytes")] long PeakBytes,
    [property: JsonPropertyName("saved_activation_bytes")] long SavedActivationBytes);

/// <summary>
/// Both topologies' time-for-memory trades, measured: a training step of each topology at each recompute
/// policy of <see cref="MemoryPlan.Policies"/>, the cases' steps taking turns. A machine whose speed drifts
/// over minutes (a shared two-core VM drifts by a fifth) moves cases timed one after the other against each
/// other; cases taking turns see the same drift, as <see cref="Comparison"/> alternates its two topologies.
/// With <c>together</c> all eight cases are live at once and take turns (small models; the CPU); otherwise
/// the two topologies of one policy take turns and the policies follow each other (a GPU, where eight large
/// models would not fit). Recomputation changes no gradient, so every case trains the same model.
/// </summary>
public static class Frontier
{
    /// <summary>
    /// Measures every (policy, topology) case of <paramref name="config"/> under <paramref name="options"/> (its
    /// recompute flags replaced by each policy's): <paramref name="warmup"/> untimed steps, then the median of
    /// <paramref name="steps"/> timed ones. Models are randomly initialised from <paramref name="options"/>' seed:
    /// a step's time and memory do not depend on the weights. Reports each finished round to <paramref name="progress"/>.
    /// </summary>
    public static IReadOnlyList<FrontierPoint> Measure(ModelConfig config, Func<IBackend> backendFactory, TrainOptions options, int steps, int warmup = 3,
        bool together = true, IProgress<(int Done, int Total)>? progress = null)
    {
        var cases = (from policy in MemoryPlan.Policies
                     from topology in new[] { Topology.Serial, Topology.Parallel }
                     select (policy.Spatial, policy.Temporal, Topology: topology)).ToList();
        var timed = MeasureCases(config, backendFactory,
            cases.Select(c => (c.Topology, options with { RecomputeSpatial = c.Spatial, RecomputeTemporal = c.Temporal })).ToList(),
            steps, warmup, together ? cases.Count : 2, progress);
        return cases.Select((c, i) => new FrontierPoint(MemoryPlan.PolicyName(c.Spatial, c.Temporal), c.Topology, timed[i].StepMsMedian, timed[i].PeakBytes, timed[i].SavedActivationBytes)).ToList();
    }

    /// <summary>
    /// Times training steps of any <paramref name="cases"/> (a topology and the options to train it with), in groups of
    /// <paramref name="groupSize"/> consecutive cases whose steps take turns (a group's models are live at once):
    /// <paramref name="warmup"/> untimed steps, then the median of <paramref name="steps"/> timed ones, with the memory
    /// of the last. The results follow the order of <paramref name="cases"/>.
    /// </summary>
    public static IReadOnlyList<(double StepMsMedian, long PeakBytes, long SavedActivationBytes)> MeasureCases(ModelConfig config, Func<IBackend> backendFactory,
        IReadOnlyList<(Topology Topology, TrainOptions Options)> cases, int steps, int warmup, int groupSize, IProgress<(int Done, int Total)>? progress = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(warmup);
        ArgumentOutOfRangeException.ThrowIfLessThan(groupSize, 1);
        var groups = cases.Chunk(groupSize).Select(c => c.ToList()).ToList();
        int rounds = groups.Count * (warmup + steps), done = 0;
        var results = new List<(double, long, long)>();
        foreach (var group in groups)
        {
            var live = new List<(IBackend Backend, TextToVideo Model, Trainer Trainer)>();
            try
            {
                foreach (var c in group)
                {
                    var backend = backendFactory();
                    TextToVideo? model = null;
                    try
                    {
                        model = TextToVideo.Create(backend, config, c.Topology, c.Options.Seed);
                        var trainer = new Trainer(model, Comparison.Data(config, c.Options.Seed, Split.Train), Stage.TextToVideo, c.Options);
                        live.Add((backend, model, trainer));
                    }
                    catch
                    {
                        model?.Dispose();
                        backend.Dispose();
                        throw;
                    }
                }

                var times = live.Select(_ => new List<double>()).ToList();
                var last = new StepStats?[live.Count];
                for (int s = 0; s < warmup + steps; s++)
                {
                    // Each round starts one case later, so that no case always follows the same one.
                    for (int k = 0; k < live.Count; k++)
                    {
                        int i = (s + k) % live.Count;
                        var stats = live[i].Trainer.TrainStep();
                        if (s >= warmup)
                        {
                            times[i].Add(stats.Milliseconds);
                            last[i] = stats;
                        }
                    }

                    progress?.Report((++done, rounds));
                }

                for (int i = 0; i < live.Count; i++)
                {
                    results.Add((Median(times[i]), last[i]!.Memory.PeakBytes, last[i]!.SavedActivationBytes));
                }
            }
            finally
            {
                foreach (var (backend, model, trainer) in live)
                {
                    trainer.Dispose();
                    model.Dispose();
                    backend.Dispose();
                }
            }
        }

        return results;
    }

    /// <summary>
    /// Each topology at its own best, in one line: the fastest case against the fastest, the leanest (lowest peak,
    /// then fastest) against the leanest, and how many serial policies some parallel case beats on both time and peak.
    /// </summary>
    public static string Summary(IReadOnlyList<FrontierPoint> points)
    {
        var serial = points.Where(r => r.Topology == Topology.Serial).ToList();
        var parallel = points.Where(r => r.Topology == Topology.Parallel).ToList();
        if (serial.Count == 0 || parallel.Count == 0)
        {
            throw new ArgumentException("the frontier needs points of both topologies", nameof(points));
        }

        var (sf, pf) = (serial.MinBy(r => r.StepMsMedian)!, parallel.MinBy(r => r.StepMsMedian)!);
        var (sl, pl) = (serial.MinBy(r => (r.PeakBytes, r.StepMsMedian))!, parallel.MinBy(r => (r.PeakBytes, r.StepMsMedian))!);
        var beaten = Beaten(points);
        return string.Create(CultureInfo.InvariantCulture,
            $"Fastest against fastest: {pf.StepMsMedian:0.0} ms ({pf.Recompute}) against {sf.StepMsMedian:0.0} ms ({sf.Recompute}), {pf.StepMsMedian / sf.StepMsMedian:0.000}. " +
            $"Leanest against leanest: {Mib(pl.PeakBytes)} MiB at {pl.StepMsMedian:0.0} ms ({pl.Recompute}) against {Mib(sl.PeakBytes)} MiB at {sl.StepMsMedian:0.0} ms ({sl.Recompute}): peak {(double)pl.PeakBytes / sl.PeakBytes:0.000}, time {pl.StepMsMedian / sl.StepMsMedian:0.000}. " +
            $"Serial policies that some parallel case beats on both time and peak: {beaten.Count} of {serial.Count}{(beaten.Count == 0 ? "" : $" ({string.Join(", ", beaten)})")}.");
    }

    /// <summary>The two topologies' points of each policy, in the order of <see cref="MemoryPlan.Policies"/> (a policy missing either topology is left out).</summary>
    public static IEnumerable<(string Recompute, FrontierPoint Serial, FrontierPoint Parallel)> Pairs(IReadOnlyList<FrontierPoint> points)
    {
        foreach (var (spatial, temporal) in MemoryPlan.Policies)
        {
            string policy = MemoryPlan.PolicyName(spatial, temporal);
            var serial = points.FirstOrDefault(p => p.Recompute == policy && p.Topology == Topology.Serial);
            var parallel = points.FirstOrDefault(p => p.Recompute == policy && p.Topology == Topology.Parallel);
            if (serial is not null && parallel is not null)
            {
                yield return (policy, serial, parallel);
            }
        }
    }

    /// <summary>The serial policies for which some parallel case is strictly faster and strictly leaner.</summary>
    public static IReadOnlyList<string> Beaten(IReadOnlyList<FrontierPoint> points)
    {
        var parallel = points.Where(r => r.Topology == Topology.Parallel).ToList();
        return points.Where(s => s.Topology == Topology.Serial && parallel.Any(p => p.StepMsMedian < s.StepMsMedian && p.PeakBytes < s.PeakBytes))
            .Select(s => s.Recompute).ToList();
    }

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture);

    /// <summary>The median (the mean of the middle two for an even count).</summary>
    internal static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
