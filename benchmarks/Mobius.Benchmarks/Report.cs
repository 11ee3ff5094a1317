using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Benchmarks;

/// <summary>
/// `Mobius.Benchmarks report [--out DIR]`: the standard set in one run (training step serial vs parallel,
/// kernel workloads, the PyTorch peer on the same model, the paper's ratios as a reference row) written to
/// DIR/&lt;date&gt;-&lt;machine&gt;.md with a plot beside it.
/// </summary>
public static class Report
{
    private const string Usage = "Mobius.Benchmarks report [--out DIR] [--no-kernels]";

    public static int Run(string[] args)
    {
        if (CommandArgs.Check(args, Usage, ["--out"], "--no-kernels") is { } code)
        {
            return code;
        }

        string outDir = CommandArgs.Get(args, "--out", Path.Combine("benchmarks", "results"));
        bool skipKernels = args.Contains("--no-kernels");
        Directory.CreateDirectory(outDir);
        var train = BenchmarkRunner.Run<TrainStepBenchmarks>();
        var kernels = skipKernels ? null : BenchmarkRunner.Run<KernelBenchmarks>();
        var peers = Backends.Names.Select(b => RunPeer(b == "cpu" ? "cpu" : "cuda", "tiny")).Where(p => p is not null).ToList();

        string machine = Machine();
        string stem = $"{DateTime.UtcNow:yyyy-MM-dd}-{Slug(machine)}";
        // The table's times come from the round-robin frontier (cases taking turns), robust to a machine whose
        // speed drifts between BenchmarkDotNet's one-case-after-the-other runs; BenchmarkDotNet's own table follows.
        var rows = new List<TrainRow>();
        foreach (var (config, backend) in TrainStepBenchmarks.Cases().Select(c => (c.Config, c.Backend)).Distinct())
        {
            rows.AddRange(FrontierCommand.Measure(config, backend, steps: 20, warmup: 3)
                .Select(p => new TrainRow(new TrainCase(config, p.Topology, backend, p.Recompute), p.StepMsMedian, p.PeakBytes, p.SavedActivationBytes)));
        }

        Plot(rows, peers!, Path.Combine(outDir, stem));
        File.WriteAllText(Path.Combine(outDir, stem + ".md"), Markdown(machine, stem, rows, peers!, train, kernels));
        Console.WriteLine($"wrote {Path.Combine(outDir, stem + ".md")}");
        return 0;
    }

    private sealed record TrainRow(TrainCase Case, double MedianMs, long PeakBytes, long SavedBytes);

    /// <summary>The PyTorch peer (benchmarks/peers/mobius_torch.py) on the same config, or null when Python with torch is missing.</summary>
    private static JsonElement? RunPeer(string device, string config)
    {
        string script = Path.Combine("benchmarks", "peers", "mobius_torch.py");
        if (!File.Exists(script))
        {
            return null;
        }

        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("MOBIUS_PYTHON") ?? "/usr/bin/python3")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in new[] { script, "bench", "--device", device, "--config", config, "--steps", "5", "--threads", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture) })
        {
            psi.ArgumentList.Add(a);
        }

        // OpenBLAS's own threads fighting PyTorch's over the same cores makes it ~3x slower and noisy.
        psi.Environment["OPENBLAS_NUM_THREADS"] = "1";
        try
        {
            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? JsonDocument.Parse(output.Trim().Split('\n')[^1]).RootElement.Clone() : null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or JsonException)
        {
            return null;
        }
    }

    private static string Markdown(string machine, string stem, List<TrainRow> rows, List<JsonElement?> peers, Summary train, Summary? kernels)
    {
        var ci = CultureInfo.InvariantCulture;
        string Mb(double b) => (b / 1048576.0).ToString("0.0", ci);
        var sb = new StringBuilder();
        sb.AppendLine($"# Benchmarks {DateTime.UtcNow:yyyy-MM-dd}: {machine}").AppendLine();
        sb.AppendLine($"Commit {Commit()}. .NET {Environment.Version}, {Environment.ProcessorCount} logical cores. Made by `dotnet run -c Release --project benchmarks/Mobius.Benchmarks -- report`.").AppendLine();
        sb.AppendLine("## Training step, serial vs parallel (stage 2, same config, seed and batches, one process)").AppendLine();
        sb.AppendLine("Each topology at each recompute policy (none; temporal: both recompute their temporal layers; spatial: serial recomputes its frozen spatial layers, which the parallel topology never keeps; spatial+temporal), the ratios at the same policy. Median of 20 steps per case after 3 warm-up steps, the cases taking turns (`Mobius.Benchmarks frontier`: on the CPU all eight in one rotation, on a GPU the two topologies of a policy); memory is exact:").AppendLine();
        sb.AppendLine("| engine | config | backend | recompute | serial ms | parallel ms | time P/S | serial peak MiB | parallel peak MiB | peak P/S | serial saved MiB | parallel saved MiB | saved P/S |");
        sb.AppendLine("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var frontiers = new List<string>();
        foreach (var g in rows.GroupBy(r => (r.Case.Config, r.Case.Backend)))
        {
            var points = g.Select(r => new FrontierPoint(r.Case.Recompute, r.Case.Topology, r.MedianMs, r.PeakBytes, r.SavedBytes)).ToList();
            foreach (var (policy, s, p) in Frontier.Pairs(points))
            {
                sb.AppendLine(ci, $"| Mobius | {g.Key.Config} | {g.Key.Backend} | {policy} | {s.StepMsMedian:0.0} | {p.StepMsMedian:0.0} | {p.StepMsMedian / s.StepMsMedian:0.000} | {Mb(s.PeakBytes)} | {Mb(p.PeakBytes)} | {(double)p.PeakBytes / s.PeakBytes:0.000} | {Mb(s.SavedActivationBytes)} | {Mb(p.SavedActivationBytes)} | {(double)p.SavedActivationBytes / s.SavedActivationBytes:0.000} |");
            }

            frontiers.Add($"- {g.Key.Config}, {g.Key.Backend}: {Frontier.Summary(points)}");
        }

        foreach (var peer in peers.OfType<JsonElement>())
        {
            var s = peer.GetProperty("serial");
            var p = peer.GetProperty("parallel");
            string Peak(JsonElement t) => t.GetProperty("peak_bytes").ValueKind == JsonValueKind.Number ? Mb(t.GetProperty("peak_bytes").GetDouble()) : "n/a";
            string PeakRatio() => peer.GetProperty("ratio").TryGetProperty("peak_bytes", out var r) ? r.GetDouble().ToString("0.000", ci) : "n/a";
            sb.AppendLine(ci, $"| {peer.GetProperty("peer").GetString()} ({peer.GetProperty("threads").GetInt32()} threads) | {peer.GetProperty("config").GetString()} | {peer.GetProperty("device").GetString()} | none | {s.GetProperty("step_ms_median").GetDouble():0.0} | {p.GetProperty("step_ms_median").GetDouble():0.0} | {peer.GetProperty("ratio").GetProperty("step_ms").GetDouble():0.000} | {Peak(s)} | {Peak(p)} | {PeakRatio()} | {Mb(s.GetProperty("saved_activation_bytes").GetDouble())} | {Mb(p.GetProperty("saved_activation_bytes").GetDouble())} | {peer.GetProperty("ratio").GetProperty("saved_activation_bytes").GetDouble():0.000} |");
        }

        sb.AppendLine("| paper (Yang et al. 2024, ModelScope-T2V on GPUs) | | | none | | | 0.88 | | | 0.76 | | | |").AppendLine();
        if (frontiers.Count > 0)
        {
            sb.AppendLine("Each topology at its own best:").AppendLine();
            foreach (var line in frontiers)
            {
                sb.AppendLine(line);
            }

            sb.AppendLine();
        }

        sb.AppendLine("PyTorch peer: the same model written independently (benchmarks/peers/mobius_torch.py), parallel with the same bridge as ours (default loop: spatial layers under `torch.no_grad()`, straight-through skip paths); its saved bytes are the unique storages autograd's saved-tensor hooks see (PyTorch keeps inputs of frozen convolutions, probabilities of attention). CPU peak memory is not measured for PyTorch.").AppendLine();
        sb.AppendLine($"![step time]({stem}-time.png) ![saved activations]({stem}-memory.png)").AppendLine();
        sb.AppendLine("### BenchmarkDotNet: training step").AppendLine();
        sb.AppendLine("One case after the other (the ratio columns pair cases timed minutes apart, so on a machine whose speed drifts they are less firm than the table above):").AppendLine();
        sb.AppendLine(Table(train));
        if (kernels is not null)
        {
            sb.AppendLine("## Kernel workloads").AppendLine();
            sb.AppendLine("Reference rates of each backend in the same run: `copy` (streaming bandwidth) and `gemm` (dense GEMM rate).").AppendLine();
            sb.AppendLine(Table(kernels));
        }

        return sb.ToString();
    }

    private static string Table(Summary summary)
    {
        var logger = new BenchmarkDotNet.Loggers.AccumulationLogger();
        BenchmarkDotNet.Exporters.MarkdownExporter.GitHub.ExportToLog(summary, logger);
        return logger.GetLog();
    }

    private static void Plot(List<TrainRow> rows, List<JsonElement?> peers, string path)
    {
        var time = new ScottPlot.Plot();
        var mem = new ScottPlot.Plot();
        var labels = new List<string>();
        var ms = new List<double>();
        var saved = new List<double>();
        foreach (var r in rows.OrderBy(r => r.Case.Backend).ThenBy(r => r.Case.Config).ThenBy(r => PolicyOrder.IndexOf(r.Case.Recompute)).ThenBy(r => r.Case.Topology))
        {
            labels.Add($"{r.Case.Config} {r.Case.Backend}\n{r.Case.Topology.ToString().ToLowerInvariant()}\n{r.Case.Recompute}");
            ms.Add(r.MedianMs);
            saved.Add(r.SavedBytes / 1048576.0);
        }

        foreach (var peer in peers.OfType<JsonElement>())
        {
            foreach (var topo in new[] { "serial", "parallel" })
            {
                labels.Add($"torch {peer.GetProperty("device").GetString()}\n{topo}");
                ms.Add(peer.GetProperty(topo).GetProperty("step_ms_median").GetDouble());
                saved.Add(peer.GetProperty(topo).GetProperty("saved_activation_bytes").GetDouble() / 1048576.0);
            }
        }

        var ticks = Enumerable.Range(0, labels.Count).Select(i => (double)i).ToArray();
        time.Add.Bars(ms.ToArray());
        time.Axes.Bottom.SetTicks(ticks, labels.ToArray());
        time.Axes.Margins(bottom: 0);
        time.YLabel("median step time (ms)");
        time.Title("Training step time");
        mem.Add.Bars(saved.ToArray());
        mem.Axes.Bottom.SetTicks(ticks, labels.ToArray());
        mem.Axes.Margins(bottom: 0);
        mem.YLabel("saved activations (MiB)");
        mem.Title("Activations kept for backward");
        time.SavePng(path + "-time.png", 1400, 500);
        mem.SavePng(path + "-memory.png", 1400, 500);
    }

    private static readonly List<string> PolicyOrder = MemoryPlan.Policies.Select(p => MemoryPlan.PolicyName(p.Spatial, p.Temporal)).ToList();

    private static string Machine()
    {
        string cpu = File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "cpu"
            : "cpu";
        string gpu = Backends.Names.Contains("cuda") ? ", " + new Mobius.Cuda.CudaBackend().Using(b => b.Device.Name) : "";
        return $"{Environment.ProcessorCount}-core {cpu}{gpu}";
    }

    private static T Using<TB, T>(this TB backend, Func<TB, T> f)
        where TB : IDisposable
    {
        using (backend)
        {
            return f(backend);
        }
    }

    private static string Commit()
    {
        try
        {
            var psi = new ProcessStartInfo("git", "rev-parse --short HEAD") { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            string c = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 ? c : "unknown";
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return "unknown";
        }
    }

    private static string Slug(string s) => new string(s.ToLowerInvariant().Select(c => char.IsAsciiLetterOrDigit(c) ? c : '-').ToArray()).Replace("--", "-").Trim('-');
}
