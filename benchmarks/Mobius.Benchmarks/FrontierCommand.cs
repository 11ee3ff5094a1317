using System.Globalization;
using System.Text;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Benchmarks;

/// <summary>
/// `Mobius.Benchmarks frontier [--config tiny] [--backend cpu] [--steps 20]`: both topologies at every recompute
/// policy, their steps taking turns (<see cref="Frontier.Measure"/>: on the CPU all eight cases at once, on a GPU
/// the two topologies of a policy), as a markdown table with the ratios at the same policy and the frontier line.
/// </summary>
public static class FrontierCommand
{
    private const string Usage = "Mobius.Benchmarks frontier [--config tiny] [--backend cpu|cuda] [--steps 20] [--warmup 3]";

    public static int Run(string[] args)
    {
        if (CommandArgs.Timing(args, Usage, 20, out int code) is not var (config, backend, steps, warmup))
        {
            return code;
        }

        var points = Measure(config, backend, steps, warmup);
        Console.WriteLine(Markdown(config, backend, points));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Median of {steps} steps per case after {warmup} warm-up steps, the cases taking turns. {Frontier.Summary(points)}"));
        return 0;
    }

    /// <summary>The frontier of <paramref name="config"/> on one of <see cref="Backends"/>, one seed, default training options.</summary>
    public static IReadOnlyList<FrontierPoint> Measure(string config, string backend, int steps, int warmup) =>
        Frontier.Measure(ModelConfig.Get(config), () => Backends.Create(backend), new TrainOptions { Seed = 1 }, steps, warmup, together: backend == "cpu",
            new Progress<(int Done, int Total)>(p => Console.Error.Write($"\rfrontier {config} on {backend}: round {p.Done}/{p.Total}   ")));

    /// <summary>One row per policy: both topologies' step times and memory, and the ratios at the same policy.</summary>
    public static string Markdown(string config, string backend, IReadOnlyList<FrontierPoint> points)
    {
        var ci = CultureInfo.InvariantCulture;
        string Mb(long b) => (b / 1048576.0).ToString("0.0", ci);
        var sb = new StringBuilder();
        sb.AppendLine("| config | backend | recompute | serial ms | parallel ms | time P/S | serial peak MiB | parallel peak MiB | peak P/S | serial saved MiB | parallel saved MiB | saved P/S |");
        sb.AppendLine("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var (policy, s, p) in Frontier.Pairs(points))
        {
            sb.AppendLine(ci, $"| {config} | {backend} | {policy} | {s.StepMsMedian:0.0} | {p.StepMsMedian:0.0} | {p.StepMsMedian / s.StepMsMedian:0.000} | {Mb(s.PeakBytes)} | {Mb(p.PeakBytes)} | {(double)p.PeakBytes / s.PeakBytes:0.000} | {Mb(s.SavedActivationBytes)} | {Mb(p.SavedActivationBytes)} | {(double)p.SavedActivationBytes / s.SavedActivationBytes:0.000} |");
        }

        return sb.ToString();
    }
}
