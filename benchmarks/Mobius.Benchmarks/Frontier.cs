using System.Globalization;
using System.Text;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Benchmarks;

/// <summary>
/// `Mobius.Benchmarks frontier [--config tiny] [--backend cpu] [--steps 20]`: one training step of each topology
/// at each recompute policy, timed round-robin. A machine whose speed drifts over minutes (a shared two-core
/// VM drifts by a fifth) moves cases timed one after the other, as BenchmarkDotNet times them, against each
/// other; cases whose steps take turns see the same drift, as `mobius compare` alternates its two topologies.
/// On the CPU all eight cases are live at once and take turns; on a GPU, where eight large models would not
/// fit, the two topologies of one policy take turns and the policies follow each other. Memory is exact.
/// </summary>
public static class Frontier
{
    private const string Usage = "Mobius.Benchmarks frontier [--config tiny] [--backend cpu|cuda] [--steps 20] [--warmup 3]";

    /// <summary>One case's measurement.</summary>
    public sealed record Point(string Recompute, Topology Topology, double MedianMs, long PeakBytes, long SavedBytes);

    public static int Run(string[] args)
    {
        if (CommandArgs.Check(args, Usage, ["--config", "--backend", "--steps", "--warmup"]) is { } code)
        {
            return code;
        }

        string config = CommandArgs.Get(args, "--config", "tiny");
        string backend = CommandArgs.Get(args, "--backend", "cpu");
        if (!int.TryParse(CommandArgs.Get(args, "--steps", "20"), CultureInfo.InvariantCulture, out int steps) || steps < 1
            || !int.TryParse(CommandArgs.Get(args, "--warmup", "3"), CultureInfo.InvariantCulture, out int warmup) || warmup < 0)
        {
            Console.Error.WriteLine($"--steps must be a whole number of at least 1 and --warmup at least 0\nusage: {Usage}");
            return 2;
        }

        if (!ModelConfig.Presets.Any(p => p.Name == config) || backend is not ("cpu" or "cuda"))
        {
            Console.Error.WriteLine($"unknown config '{config}' or backend '{backend}' (configs: {string.Join(", ", ModelConfig.Presets.Select(p => p.Name))}; backends: cpu, cuda)\nusage: {Usage}");
            return 2;
        }

        var points = Measure(config, backend, steps, warmup, Console.Error.WriteLine);
        Console.WriteLine(Markdown(config, backend, steps, points));
        return 0;
    }

    /// <summary>Measures every (policy, topology) case: <paramref name="warmup"/> untimed steps, then the median of <paramref name="steps"/> timed ones.</summary>
    public static List<Point> Measure(string configName, string backendName, int steps, int warmup, Action<string>? log = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        var config = ModelConfig.Get(configName);
        var cases = (from policy in MemoryPlan.Policies
                     from topology in new[] { Topology.Serial, Topology.Parallel }
                     select (policy.Spatial, policy.Temporal, Topology: topology)).ToList();
        var groups = backendName == "cpu" ? [cases] : cases.Chunk(2).Select(c => c.ToList()).ToList();
        var points = new List<Point>();
        foreach (var group in groups)
        {
            var live = new List<(IBackend Backend, TextToVideo Model, Trainer Trainer)>();
            try
            {
                foreach (var c in group)
                {
                    var backend = Backends.Create(backendName);
                    var model = TextToVideo.Create(backend, config, c.Topology, seed: 1);
                    var trainer = new Trainer(model, Comparison.Data(config, 1, Split.Train), Stage.TextToVideo,
                        new TrainOptions { Seed = 1, RecomputeSpatial = c.Spatial, RecomputeTemporal = c.Temporal });
                    live.Add((backend, model, trainer));
                }

                var times = live.Select(_ => new List<double>()).ToList();
                var last = new StepStats?[live.Count];
                for (int s = 0; s < warmup + steps; s++)
                {
                    // Each round starts one case later, so no case always follows the same one.
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

                    log?.Invoke($"round {s + 1}/{warmup + steps}");
                }

                for (int i = 0; i < live.Count; i++)
                {
                    var c = group[i];
                    var sorted = times[i].Order().ToList();
                    double median = sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
                    points.Add(new Point(MemoryPlan.PolicyName(c.Spatial, c.Temporal), c.Topology, median, last[i]!.Memory.PeakBytes, last[i]!.SavedActivationBytes));
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

        return points;
    }

    /// <summary>A markdown table (one row per policy, the ratios at the same policy) and the frontier line.</summary>
    public static string Markdown(string config, string backend, int steps, List<Point> points)
    {
        var ci = CultureInfo.InvariantCulture;
        string Mb(long b) => (b / 1048576.0).ToString("0.0", ci);
        var sb = new StringBuilder();
        sb.AppendLine("| config | backend | recompute | serial ms | parallel ms | time P/S | serial peak MiB | parallel peak MiB | peak P/S | serial saved MiB | parallel saved MiB | saved P/S |");
        sb.AppendLine("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var policy in points.Select(p => p.Recompute).Distinct())
        {
            var s = points.Single(p => p.Recompute == policy && p.Topology == Topology.Serial);
            var p = points.Single(p => p.Recompute == policy && p.Topology == Topology.Parallel);
            sb.AppendLine(ci, $"| {config} | {backend} | {policy} | {s.MedianMs:0.0} | {p.MedianMs:0.0} | {p.MedianMs / s.MedianMs:0.000} | {Mb(s.PeakBytes)} | {Mb(p.PeakBytes)} | {(double)p.PeakBytes / s.PeakBytes:0.000} | {Mb(s.SavedBytes)} | {Mb(p.SavedBytes)} | {(double)p.SavedBytes / s.SavedBytes:0.000} |");
        }

        sb.AppendLine().AppendLine(ci, $"Median of {steps} steps per case, the cases taking turns. {Line(points)}");
        return sb.ToString();
    }

    /// <summary>Fastest against fastest, leanest against leanest, and which serial policies a parallel one beats on both counts.</summary>
    public static string Line(List<Point> points)
    {
        var ci = CultureInfo.InvariantCulture;
        var serial = points.Where(r => r.Topology == Topology.Serial).ToList();
        var parallel = points.Where(r => r.Topology == Topology.Parallel).ToList();
        var (sf, pf) = (serial.MinBy(r => r.MedianMs)!, parallel.MinBy(r => r.MedianMs)!);
        var (sl, pl) = (serial.MinBy(r => (r.PeakBytes, r.MedianMs))!, parallel.MinBy(r => (r.PeakBytes, r.MedianMs))!);
        var dominated = serial.Where(s => parallel.Any(p => p.MedianMs < s.MedianMs && p.PeakBytes < s.PeakBytes)).Select(s => s.Recompute).ToList();
        return string.Create(ci, $"Fastest against fastest: {pf.MedianMs:0.0} ms ({pf.Recompute}) against {sf.MedianMs:0.0} ms ({sf.Recompute}), {pf.MedianMs / sf.MedianMs:0.000}. " +
            $"Leanest against leanest: {pl.PeakBytes / 1048576.0:0.0} MiB at {pl.MedianMs:0.0} ms ({pl.Recompute}) against {sl.PeakBytes / 1048576.0:0.0} MiB at {sl.MedianMs:0.0} ms ({sl.Recompute}): peak {(double)pl.PeakBytes / sl.PeakBytes:0.000}, time {pl.MedianMs / sl.MedianMs:0.000}. " +
            $"Serial policies that some parallel one beats on both time and peak: {dominated.Count} of {serial.Count}{(dominated.Count == 0 ? "" : $" ({string.Join(", ", dominated)})")}.");
    }
}
