using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Mobius.Data;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Cli;

/// <summary>The mobius command end to end on the micro config, as a user runs it: a separate process.</summary>
public sealed class CliTests
{
    private static (int Code, string Out, string Err) Mobius(params string[] args) => Run("", args);

    private static (int Code, string Out, string Err) Run(string cudaMode, params string[] args) => Run(cudaMode, null, args);

    private static (int Code, string Out, string Err) Run(string cudaMode, IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "mobius.dll"));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["MOBIUS_CUDA"] = cudaMode;
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(600_000), "mobius did not finish in 10 minutes");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Whitespace runs as one space: a message wrapped to the console's width reads as one line.</summary>
    private static string Flat(string text) => System.Text.RegularExpressions.Regex.Replace(text, @"\s+", " ");

    /// <summary>Asserts the exit code, the message and no stack trace; returns the output, its line wrapping undone.</summary>
    private static string AssertCleanFailure((int Code, string Out, string Err) r, int code, string mention)
    {
        Assert.True(r.Code == code, $"exit {r.Code}, expected {code}:\n{r.Out}\n{r.Err}");
        string all = r.Out + r.Err;
        Assert.Contains(Flat(mention), Flat(all));
        Assert.DoesNotContain("   at ", all);
        return Flat(all);
    }

    [Fact]
    public void Info_lists_configs_with_parameter_counts()
    {
        var r = Mobius("info");
        Assert.True(r.Code == 0, r.Err);
        foreach (var name in new[] { "micro", "tiny", "small", "ms256" })
        {
            Assert.Contains(name, r.Out);
        }

        Assert.Contains("cpu", r.Out);

        // The checkpoints that ship, and one described in full from its metadata.
        Assert.Contains("tiny-t2v.safetensors", r.Out);
        Assert.Contains("text-to-video, serial", r.Out);
        var one = Mobius("info", "--checkpoint", Path.Combine(AppContext.BaseDirectory, "models", "tiny-t2v.safetensors"));
        Assert.True(one.Code == 0, one.Out + one.Err);
        foreach (var fact in new[] { "text-to-video, serial topology (tiny)", "8 frames of 32x32, frame noise correlation 0 (sampled from starting noise correlated 0.9 unless --sample-frame-noise)", "2,000 (seed 1)",
                                     "generated clips: move-right", "batch 8 clips", "no: weights only", "mobius train --topology serial" })
        {
            Assert.Contains(fact, one.Out);
        }

        AssertCleanFailure(Mobius("info", "--checkpoint", "no-such.safetensors"), 3, "no-such.safetensors");
    }

    [Fact]
    public void Compare_runs_on_the_cuda_backend_over_the_simulated_driver_and_matches_the_cpu_run()
    {
        using var folder = new TempFolder();
        string[] common = ["compare", "--config", "micro", "--steps", "1", "--samples", "0", "--validation-batches", "1", "--json", "--seed", "5"];
        var cpu = Run("", [.. common, "--backend", "cpu", "--out", folder.File("cpu")]);
        var cuda = Run("sim", [.. common, "--backend", "cuda", "--out", folder.File("cuda")]);
        var tf32 = Run("sim", [.. common, "--backend", "cuda", "--math", "tf32", "--out", folder.File("tf32")]);
        Assert.True(cpu.Code == 0, cpu.Out + cpu.Err);
        Assert.True(cuda.Code == 0, cuda.Out + cuda.Err);
        Assert.True(tf32.Code == 0, tf32.Out + tf32.Err);
        using var a = JsonDocument.Parse(cpu.Out);
        using var b = JsonDocument.Parse(cuda.Out);
        using var c = JsonDocument.Parse(tf32.Out);
        Assert.Contains("simulat", b.RootElement.GetProperty("backend").GetString(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal("fp32", a.RootElement.GetProperty("math").GetString());
        Assert.Equal("fp32", b.RootElement.GetProperty("math").GetString());
        Assert.Equal("tf32", c.RootElement.GetProperty("math").GetString());
        Assert.Contains("TF32 tensor cores for cuBLAS and cuDNN (--math tf32)", Flat(File.ReadAllText(Path.Combine(folder.File("tf32"), "report.md"))));
        foreach (var topo in new[] { "serial", "parallel" })
        {
            // Same seed, data and weights: the losses agree to float32 reduction-order differences (relative 1e-3),
            // and in TF32 (inputs of every GEMM and convolution rounded to 11 significant bits) to 1e-2.
            foreach (var key in new[] { "final_loss", "validation_loss", "initial_validation_loss" })
            {
                double x = a.RootElement.GetProperty(topo).GetProperty(key).GetDouble();
                double y = b.RootElement.GetProperty(topo).GetProperty(key).GetDouble();
                double z = c.RootElement.GetProperty(topo).GetProperty(key).GetDouble();
                Assert.True(Math.Abs(x - y) <= 1e-3 * Math.Abs(x), $"{topo}.{key}: cpu {x}, cuda {y}");
                Assert.True(Math.Abs(x - z) <= 1e-2 * Math.Abs(x), $"{topo}.{key}: cpu {x}, cuda in TF32 {z}");
            }

            Assert.Equal(a.RootElement.GetProperty(topo).GetProperty("saved_activation_bytes").GetInt64(),
                b.RootElement.GetProperty(topo).GetProperty("saved_activation_bytes").GetInt64());
            Assert.Equal(a.RootElement.GetProperty(topo).GetProperty("saved_activation_bytes").GetInt64(),
                c.RootElement.GetProperty(topo).GetProperty("saved_activation_bytes").GetInt64());
        }

        AssertCleanFailure(Run("sim", [.. common, "--backend", "cpu", "--math", "tf32"]), 2, "--math tf32 needs --backend cuda");
        AssertCleanFailure(Run("sim", [.. common, "--backend", "cpu", "--math", "bf16"]), 2, "--math bf16 needs --backend cuda");
        AssertCleanFailure(Run("sim", [.. common, "--backend", "cuda", "--math", "fp16"]), 2, "--math must be fp32, tf32 or bf16, got 'fp16'");
    }

    [Fact]
    public void Compare_without_samples_reports_no_motion_score_rather_than_a_number()
    {
        using var folder = new TempFolder();
        var r = Mobius("compare", "--config", "micro", "--steps", "1", "--samples", "0", "--json", "--out", folder.Path);
        Assert.True(r.Code == 0, r.Out + r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        foreach (var topo in new[] { "serial", "parallel" })
        {
            foreach (var key in new[] { "motion_score", "motion_match", "consistency" })
            {
                Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty(topo).GetProperty(key).ValueKind);
            }
        }

        Assert.Contains("| motion score of samples (0..1) | n/a | n/a |", File.ReadAllText(folder.File("report.md")));
        Assert.False(doc.RootElement.GetProperty("serial").TryGetProperty("time_by_kind", out _), "no breakdown without --profile");
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("frozen_temporal").ValueKind);
        Assert.False(doc.RootElement.GetProperty("recompute_spatial").GetBoolean());
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("frontier").ValueKind);
        Assert.Equal(4, doc.RootElement.GetProperty("operating_points").GetArrayLength());
        Assert.Contains("Memory at every recompute policy, planned", File.ReadAllText(folder.File("report.md")));
    }

    [Fact]
    public void Compare_with_a_frontier_times_both_topologies_at_every_recompute_policy()
    {
        using var folder = new TempFolder();
        var r = Mobius("compare", "--config", "micro", "--steps", "1", "--samples", "0", "--frontier", "1", "--json", "--out", folder.Path);
        Assert.True(r.Code == 0, r.Out + r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var points = doc.RootElement.GetProperty("frontier").EnumerateArray().ToList();
        Assert.Equal(8, points.Count);
        Assert.Equal(["none", "temporal", "spatial", "spatial+temporal"], points.Select(p => p.GetProperty("recompute").GetString()).Distinct());
        Assert.All(points, p => Assert.True(p.GetProperty("step_ms_median").GetDouble() > 0));
        // The measured memory of each case is the planned one.
        foreach (var planned in doc.RootElement.GetProperty("operating_points").EnumerateArray())
        {
            foreach (var topology in new[] { "serial", "parallel" })
            {
                var measured = points.Single(p => p.GetProperty("recompute").GetString() == planned.GetProperty("recompute").GetString()
                    && p.GetProperty("topology").GetString()!.Equals(topology, StringComparison.OrdinalIgnoreCase));
                Assert.Equal(planned.GetProperty(topology).GetProperty("peak_bytes").GetInt64(), measured.GetProperty("peak_bytes").GetInt64());
            }
        }

        string report = File.ReadAllText(folder.File("report.md"));
        Assert.Contains("Both topologies at every recompute policy, measured after the run", report);
        Assert.Contains("Fastest against fastest", report);

        // The saved bytes' split: the parallel topology keeps none of the frozen layers' and all of the rest.
        Assert.Contains("| of them, the frozen spatial layers' (MiB) |", report);
        Assert.Matches(@"\| of them, the frozen spatial layers' \(MiB\) \| [1-9][0-9.]* \| 0\.0 \|", report);
        Assert.Matches(@"\| of them, the rest: temporal layers, bridges, head, loss \(MiB\) \| [0-9.]+ \| [0-9.]+ \| 1\.000 \|", report);
    }

    [Fact]
    public void Plan_gives_both_topologies_memory_without_a_device()
    {
        var r = Mobius("plan", "--config", "micro", "--batch", "3", "--recompute-temporal", "--json");
        Assert.True(r.Code == 0, r.Out + r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal("micro", root.GetProperty("config").GetString());
        Assert.Equal(3, root.GetProperty("batch").GetInt32());
        Assert.True(root.GetProperty("recompute_temporal").GetBoolean());
        long serial = root.GetProperty("serial").GetProperty("peak_bytes").GetInt64();
        long parallel = root.GetProperty("parallel").GetProperty("peak_bytes").GetInt64();
        Assert.InRange(parallel, 1, serial - 1);
        Assert.Equal((double)parallel / serial, root.GetProperty("peak_ratio").GetDouble(), 1e-12);
        Assert.True(root.GetProperty("serial").GetProperty("memory").GetProperty("saved_activations").GetInt64() > 0);
        // The frozen layers' part of the saved bytes: serial's only; without it serial keeps what the parallel topology does.
        long SavedOf(string topology, string field) => root.GetProperty(topology).GetProperty(field).GetInt64();
        Assert.True(SavedOf("serial", "saved_frozen_spatial_bytes") > 0);
        Assert.Equal(0, SavedOf("parallel", "saved_frozen_spatial_bytes"));
        Assert.Equal(SavedOf("serial", "saved_activation_bytes") - SavedOf("serial", "saved_frozen_spatial_bytes"), SavedOf("parallel", "saved_activation_bytes"));
        // Every policy planned beside it; the one asked for is the plan itself.
        var points = root.GetProperty("operating_points").EnumerateArray().ToList();
        Assert.Equal(4, points.Count);
        var asked = Assert.Single(points, p => p.GetProperty("recompute").GetString() == "temporal");
        Assert.Equal(serial, asked.GetProperty("serial").GetProperty("peak_bytes").GetInt64());
        Assert.Equal(parallel, asked.GetProperty("parallel").GetProperty("peak_bytes").GetInt64());

        // A larger batch needs more; the table names what it planned.
        var table = Mobius("plan", "--config", "micro", "--batch", "4");
        Assert.True(table.Code == 0, table.Out + table.Err);
        Assert.Contains("planned memory of a training step", table.Out);
        Assert.Contains("batch 4", table.Out);
        Assert.Contains("memory at every recompute policy", table.Out);
        Assert.DoesNotContain("by layer kind and op", table.Out);

        // The saved bytes split into the frozen spatial layers' part, which only serial keeps, and the rest, the same in both.
        double[] Cells(string label)
        {
            var line = Assert.Single(table.Out.Split('\n'), l => l.Contains(label, StringComparison.Ordinal));
            return line.Split('│', StringSplitOptions.TrimEntries).Where(c => c.EndsWith(" MiB", StringComparison.Ordinal) || c == "1.00")
                .Select(c => double.Parse(c.Replace(" MiB", "", StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        }

        var savedRow = Cells("saved for backward");
        var frozen = Cells("of them, the frozen spatial layers'");
        var rest = Cells("of them, the rest");
        Assert.True(frozen[0] > 0, table.Out);
        Assert.Equal(0, frozen[1]);
        Assert.Equal([rest[1], rest[1], 1.00], rest); // serial's rest equals the parallel topology's, ratio 1.00
        Assert.Equal(savedRow[0], frozen[0] + rest[0], 0.11);
        Assert.Equal(savedRow[1], rest[1], 0.051);

        // What each op keeps: in the JSON always, in the table with --by-op; the rows add up to the saved bytes.
        var ops = root.GetProperty("parallel").GetProperty("saved_by_op").EnumerateArray().ToList();
        Assert.NotEmpty(ops);
        Assert.All(ops, o => Assert.DoesNotContain(o.GetProperty("kind").GetString(), new[] { "ResBlock2D", "SpatialTransformer" }));
        Assert.Equal(root.GetProperty("parallel").GetProperty("saved_by_kind").EnumerateObject().Sum(k => k.Value.GetInt64()), ops.Sum(o => o.GetProperty("bytes").GetInt64()));
        var byOp = Mobius("plan", "--config", "micro", "--by-op");
        Assert.True(byOp.Code == 0, byOp.Out + byOp.Err);
        Assert.Contains("saved for backward by layer kind and op", byOp.Out);
        Assert.Contains("SpatialTransformer", byOp.Out);

        // The weights' moving average is one more copy of the trainable weights, as optimizer state, in each topology.
        var plain = Mobius("plan", "--config", "micro", "--json");
        var averaged = Mobius("plan", "--config", "micro", "--ema", "0.999", "--json");
        Assert.True(averaged.Code == 0, averaged.Out + averaged.Err);
        using (var p0 = JsonDocument.Parse(plain.Out))
        using (var p1 = JsonDocument.Parse(averaged.Out))
        {
            foreach (var topology in new[] { "serial", "parallel" })
            {
                long trainable = p0.RootElement.GetProperty(topology).GetProperty("trainable_params").GetInt64();
                long before = p0.RootElement.GetProperty(topology).GetProperty("memory").GetProperty("optimizer_state").GetInt64();
                long after = p1.RootElement.GetProperty(topology).GetProperty("memory").GetProperty("optimizer_state").GetInt64();
                Assert.Equal(before + trainable * sizeof(float), after);
            }
        }

        // bf16 frozen weights: the same bytes less in both topologies (the same frozen model), nothing else changes.
        var narrow = Mobius("plan", "--config", "micro", "--frozen-weights", "bf16", "--json");
        Assert.True(narrow.Code == 0, narrow.Out + narrow.Err);
        using (var p0 = JsonDocument.Parse(plain.Out))
        using (var p1 = JsonDocument.Parse(narrow.Out))
        {
            Assert.Equal("float32", p0.RootElement.GetProperty("frozen_weights").GetString());
            Assert.Equal("bfloat16", p1.RootElement.GetProperty("frozen_weights").GetString());
            long Weights(JsonDocument d, string t) => d.RootElement.GetProperty(t).GetProperty("memory").GetProperty("weights").GetInt64();
            long Saved(JsonDocument d, string t) => d.RootElement.GetProperty(t).GetProperty("saved_activation_bytes").GetInt64();
            long less = Weights(p0, "serial") - Weights(p1, "serial");
            Assert.InRange(less, 1, Weights(p0, "serial") / 2);
            Assert.Equal(less, Weights(p0, "parallel") - Weights(p1, "parallel"));
            Assert.Equal(Saved(p0, "serial"), Saved(p1, "serial"));
            Assert.Equal(Saved(p0, "parallel"), Saved(p1, "parallel"));
        }

        Assert.Contains("bf16 frozen weights", Flat(Mobius("plan", "--config", "micro", "--frozen-weights", "bf16").Out));

        // int8 frozen weights: less again than bf16, the same in both topologies.
        var int8Weights = Mobius("plan", "--config", "micro", "--frozen-weights", "int8", "--json");
        Assert.True(int8Weights.Code == 0, int8Weights.Out + int8Weights.Err);
        using (var p0 = JsonDocument.Parse(plain.Out))
        using (var p1 = JsonDocument.Parse(narrow.Out))
        using (var p2 = JsonDocument.Parse(int8Weights.Out))
        {
            Assert.Equal("int8", p2.RootElement.GetProperty("frozen_weights").GetString());
            long Weights(JsonDocument d, string t) => d.RootElement.GetProperty(t).GetProperty("memory").GetProperty("weights").GetInt64();
            long bf16Less = Weights(p0, "serial") - Weights(p1, "serial"), int8Less = Weights(p0, "serial") - Weights(p2, "serial");
            Assert.InRange(int8Less, 1.3 * bf16Less, 1.5 * bf16Less + 1); // a quarter of fp32's bytes and the scales, against a half
            Assert.Equal(int8Less, Weights(p0, "parallel") - Weights(p2, "parallel"));
        }

        Assert.Contains("int8 frozen weights", Flat(Mobius("plan", "--config", "micro", "--frozen-weights", "int8").Out));

        // bf16 saved activations: about half the bytes kept for backward, in both topologies, the weights unchanged.
        var kept = Mobius("plan", "--config", "micro", "--saved-activations", "bf16", "--json");
        Assert.True(kept.Code == 0, kept.Out + kept.Err);
        using (var p0 = JsonDocument.Parse(plain.Out))
        using (var p1 = JsonDocument.Parse(kept.Out))
        {
            Assert.Equal("bfloat16", p1.RootElement.GetProperty("saved_activations").GetString());
            foreach (var topology in new[] { "serial", "parallel" })
            {
                var t0 = p0.RootElement.GetProperty(topology);
                var t1 = p1.RootElement.GetProperty(topology);
                Assert.InRange(t1.GetProperty("saved_activation_bytes").GetInt64() / (double)t0.GetProperty("saved_activation_bytes").GetInt64(), 0.45, 0.7);
                Assert.Equal(t0.GetProperty("memory").GetProperty("weights").GetInt64(), t1.GetProperty("memory").GetProperty("weights").GetInt64());
            }
        }

        // int8 blocks: less again than bf16, in both topologies, named in the JSON and the title.
        var int8 = Mobius("plan", "--config", "micro", "--saved-activations", "int8", "--json");
        Assert.True(int8.Code == 0, int8.Out + int8.Err);
        using (var p0 = JsonDocument.Parse(plain.Out))
        using (var p1 = JsonDocument.Parse(kept.Out))
        using (var p2 = JsonDocument.Parse(int8.Out))
        {
            Assert.Equal("int8", p2.RootElement.GetProperty("saved_activations").GetString());
            foreach (var topology in new[] { "serial", "parallel" })
            {
                long Saved(JsonDocument d) => d.RootElement.GetProperty(topology).GetProperty("saved_activation_bytes").GetInt64();
                Assert.InRange(Saved(p2) / (double)Saved(p0), 0.15, 0.4);
                Assert.True(Saved(p2) < Saved(p1));
            }
        }

        Assert.Contains("int8 saved activations", Flat(Mobius("plan", "--config", "micro", "--saved-activations", "int8").Out));
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--saved-activations", "fp8"), 2, "--saved-activations must be fp32, bf16 or int8");

        // bf16 optimizer state: half the moments' bytes in both topologies, nothing else.
        var moments = Mobius("plan", "--config", "micro", "--optimizer-state", "bf16", "--json");
        Assert.True(moments.Code == 0, moments.Out + moments.Err);
        using (var p0 = JsonDocument.Parse(plain.Out))
        using (var p1 = JsonDocument.Parse(moments.Out))
        {
            Assert.Equal("bfloat16", p1.RootElement.GetProperty("optimizer_state").GetString());
            foreach (var topology in new[] { "serial", "parallel" })
            {
                var m0 = p0.RootElement.GetProperty(topology).GetProperty("memory");
                var m1 = p1.RootElement.GetProperty(topology).GetProperty("memory");
                Assert.Equal(m0.GetProperty("optimizer_state").GetInt64(), 2 * m1.GetProperty("optimizer_state").GetInt64());
                Assert.Equal(m0.GetProperty("weights").GetInt64(), m1.GetProperty("weights").GetInt64());
            }
        }

        Assert.Contains("bf16 optimizer state", Flat(Mobius("plan", "--config", "micro", "--optimizer-state", "bf16").Out));
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--optimizer-state", "int8"), 2, "--optimizer-state must be fp32 or bf16");
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--frozen-weights", "fp16"), 2, "--frozen-weights must be fp32, bf16 or int8");

        // Other clip shapes: twice the frames, or twice the pixels, keep about twice the activations in each topology.
        var longer = Mobius("plan", "--config", "micro", "--frames", "8", "--json");
        var wider = Mobius("plan", "--config", "micro", "--size", "16x32", "--json");
        Assert.True(longer.Code == 0 && wider.Code == 0, longer.Err + wider.Err);
        using (var p0 = JsonDocument.Parse(plain.Out))
        using (var pf = JsonDocument.Parse(longer.Out))
        using (var pw = JsonDocument.Parse(wider.Out))
        {
            Assert.Equal((4, 16, 16), (p0.RootElement.GetProperty("frames").GetInt32(), p0.RootElement.GetProperty("height").GetInt32(), p0.RootElement.GetProperty("width").GetInt32()));
            Assert.Equal((8, 16, 16), (pf.RootElement.GetProperty("frames").GetInt32(), pf.RootElement.GetProperty("height").GetInt32(), pf.RootElement.GetProperty("width").GetInt32()));
            Assert.Equal((4, 16, 32), (pw.RootElement.GetProperty("frames").GetInt32(), pw.RootElement.GetProperty("height").GetInt32(), pw.RootElement.GetProperty("width").GetInt32()));
            foreach (var topology in new[] { "serial", "parallel" })
            {
                double saved = p0.RootElement.GetProperty(topology).GetProperty("saved_activation_bytes").GetInt64();
                Assert.InRange(pf.RootElement.GetProperty(topology).GetProperty("saved_activation_bytes").GetInt64() / saved, 1.9, 2.1);
                Assert.InRange(pw.RootElement.GetProperty(topology).GetProperty("saved_activation_bytes").GetInt64() / saved, 1.9, 2.1);
            }
        }

        Assert.Contains("8 frames of 16x16", Flat(Mobius("plan", "--config", "micro", "--frames", "8").Out));

        // The largest batch within a budget: the serial peak at the config's batch of 2 holds at least 2 serial clips.
        using (var p0 = JsonDocument.Parse(plain.Out))
        {
            long serialPeak = p0.RootElement.GetProperty("serial").GetProperty("peak_block_bytes").GetInt64();
            Assert.True(serialPeak > p0.RootElement.GetProperty("serial").GetProperty("peak_bytes").GetInt64());
            long mib = (serialPeak + 1048575) / 1048576;
            var fit = Mobius("plan", "--config", "micro", "--budget-mib", mib.ToString(System.Globalization.CultureInfo.InvariantCulture), "--json");
            Assert.True(fit.Code == 0, fit.Out + fit.Err);
            using var pf = JsonDocument.Parse(fit.Out);
            var largest = pf.RootElement.GetProperty("largest_batch");
            Assert.Equal(mib * 1048576, largest.GetProperty("budget_bytes").GetInt64());
            Assert.True(largest.GetProperty("serial").GetInt32() >= 2);
            Assert.True(largest.GetProperty("parallel").GetInt32() > largest.GetProperty("serial").GetInt32());
            Assert.Equal(JsonValueKind.Null, p0.RootElement.GetProperty("largest_batch").ValueKind);
            Assert.Matches(@"largest batch within \d+ MiB: serial \d+ clips, parallel \d+ clips \([\d.]+ times serial's\)",
                Flat(Mobius("plan", "--config", "micro", "--budget-mib", mib.ToString(System.Globalization.CultureInfo.InvariantCulture)).Out));
        }

        AssertCleanFailure(Mobius("plan", "--config", "micro", "--budget-mib", "-1"), 2, "--budget-mib must be 0 (no search) or more");
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--frames", "33"), 2, "--frames must be 2..32");
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--frames", "1"), 2, "--frames must be 2..32");
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--size", "18"), 2, "height and width must be multiples of 4");
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--size", "16x"), 2, "--size must be HxW or one number");
        AssertCleanFailure(Mobius("plan", "--config", "micro", "--batch", "0"), 2, "--batch must be at least 1");
        AssertCleanFailure(Mobius("plan", "--config", "huge"), 2, "unknown config 'huge'");
    }

    [Fact]
    public void Compare_recompute_options_give_the_same_losses_with_fewer_saved_activations()
    {
        using var plainFolder = new TempFolder();
        using var spatialFolder = new TempFolder();
        using var temporalFolder = new TempFolder();
        string[] common = ["compare", "--config", "micro", "--steps", "2", "--samples", "0", "--json", "--seed", "4"];
        var runs = new[] { (plainFolder, ""), (spatialFolder, "--recompute-spatial"), (temporalFolder, "--recompute-temporal") }
            .Select(run =>
            {
                var r = Mobius([.. common, "--out", run.Item1.Path, .. run.Item2.Length > 0 ? new[] { run.Item2 } : []]);
                Assert.True(r.Code == 0, r.Out + r.Err);
                return JsonDocument.Parse(r.Out);
            }).ToArray();
        var (a, spatial, temporal) = (runs[0], runs[1], runs[2]);
        Assert.True(spatial.RootElement.GetProperty("recompute_spatial").GetBoolean());
        Assert.False(spatial.RootElement.GetProperty("recompute_temporal").GetBoolean());
        Assert.True(temporal.RootElement.GetProperty("recompute_temporal").GetBoolean());
        JsonElement Get(JsonDocument d, string topo, string key) => d.RootElement.GetProperty(topo).GetProperty(key);
        long Saved(JsonDocument d, string topo) => Get(d, topo, "saved_activation_bytes").GetInt64();

        // The same gradients, so the same training: losses equal to the last bit.
        foreach (var b in new[] { spatial, temporal })
        {
            foreach (var key in new[] { "final_loss", "validation_loss" })
            {
                Assert.Equal(Get(a, "serial", key).GetDouble(), Get(b, "serial", key).GetDouble());
                Assert.Equal(Get(a, "parallel", key).GetDouble(), Get(b, "parallel", key).GetDouble());
            }
        }

        // Spatial: serial keeps less; the parallel topology, which keeps no spatial activation, is untouched.
        Assert.True(Saved(spatial, "serial") < Saved(a, "serial"));
        Assert.True(Get(spatial, "serial", "peak_bytes").GetInt64() < Get(a, "serial", "peak_bytes").GetInt64());
        Assert.Equal(Saved(a, "parallel"), Saved(spatial, "parallel"));
        Assert.Contains("Serial recomputes its frozen spatial layers in backward", File.ReadAllText(spatialFolder.File("report.md")));

        // Temporal: both keep less.
        Assert.True(Saved(temporal, "serial") < Saved(a, "serial"));
        Assert.True(Saved(temporal, "parallel") < Saved(a, "parallel") / 2);
        Assert.Contains("Both recompute their temporal layers in backward", File.ReadAllText(temporalFolder.File("report.md")));
        foreach (var d in runs)
        {
            d.Dispose();
        }
    }

    [Fact]
    public void Compare_profile_splits_the_step_time_by_layer_kind_and_freeze_keeps_layers_frozen_in_both()
    {
        using var folder = new TempFolder();
        var r = Mobius("compare", "--config", "micro", "--steps", "1", "--samples", "0", "--profile", "1", "--freeze", "mid.", "--json", "--out", folder.Path);
        Assert.True(r.Code == 0, r.Out + r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var serial = doc.RootElement.GetProperty("serial").GetProperty("time_by_kind");
        var parallel = doc.RootElement.GetProperty("parallel").GetProperty("time_by_kind");
        double Ms(JsonElement kinds, string kind, string part) =>
            kinds.TryGetProperty(kind, out var k) ? k.GetProperty(part).GetDouble() : 0;
        foreach (var kinds in new[] { serial, parallel })
        {
            foreach (var kind in kinds.EnumerateObject())
            {
                Assert.InRange(kind.Value.GetProperty("forward_ms").GetDouble(), 0, 1e6);
                Assert.InRange(kind.Value.GetProperty("backward_ms").GetDouble(), 0, 1e6);
            }

            Assert.True(Ms(kinds, "TemporalTransformer", "backward_ms") > 0, "the temporal layers train in both topologies");
            foreach (var own in new[] { "Data", "Optimizer" })
            {
                Assert.True(Ms(kinds, own, "forward_ms") > 0, $"{own} is timed on its own");
                Assert.Equal(0, Ms(kinds, own, "backward_ms"));
            }
        }

        // Serial passes gradients back through the frozen spatial layers; parallel runs them forward only.
        Assert.True(Ms(serial, "SpatialTransformer", "backward_ms") > 0);
        Assert.Equal(0, Ms(parallel, "SpatialTransformer", "backward_ms"));
        Assert.True(Ms(parallel, "SpatialTransformer", "forward_ms") > 0);
        Assert.True(parallel.TryGetProperty("Bridge", out _));
        Assert.Contains("Time by layer kind over 1 extra steps per topology", File.ReadAllText(folder.File("report.md")));

        // --freeze: both topologies train the same smaller set, and the run says which layers stayed frozen.
        Assert.Equal("mid.", doc.RootElement.GetProperty("frozen_temporal")[0].GetString());
        long trainable = doc.RootElement.GetProperty("serial").GetProperty("trainable_params").GetInt64();
        Assert.Equal(trainable, doc.RootElement.GetProperty("parallel").GetProperty("trainable_params").GetInt64());
        Assert.InRange(trainable, 1, 163_871);  // micro trains 163,872 temporal parameters with none frozen
        Assert.Contains("Temporal layers kept frozen in both: mid.", File.ReadAllText(folder.File("report.md")));
    }

    [Fact]
    public void Compare_validates_during_training_without_changing_it_and_keep_best_goes_back_to_the_best_weights()
    {
        using var plainFolder = new TempFolder();
        using var curveFolder = new TempFolder();
        using var bestFolder = new TempFolder();
        // A learning rate far too high makes later weights worse than earlier ones, so the best is not the last.
        string[] common = ["compare", "--config", "micro", "--steps", "4", "--samples", "0", "--json", "--seed", "5", "--lr", "0.5"];
        JsonDocument Run(TempFolder folder, params string[] extra)
        {
            var r = Mobius([.. common, "--out", folder.Path, .. extra]);
            Assert.True(r.Code == 0, r.Out + r.Err);
            return JsonDocument.Parse(r.Out);
        }

        using var plain = Run(plainFolder);
        using var curve = Run(curveFolder, "--validate-every", "2");
        using var best = Run(bestFolder, "--validate-every", "2", "--keep-best");
        JsonElement T(JsonDocument d, string topo) => d.RootElement.GetProperty(topo);
        double[] Losses(JsonDocument d, string topo) => T(d, topo).GetProperty("losses").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        (int Step, double Loss)[] Curve(JsonDocument d, string topo) => T(d, topo).GetProperty("validation_curve").EnumerateArray()
            .Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("loss").GetDouble())).ToArray();

        Assert.Equal(0, plain.RootElement.GetProperty("validate_every").GetInt32());
        Assert.Equal(2, curve.RootElement.GetProperty("validate_every").GetInt32());
        Assert.True(best.RootElement.GetProperty("keep_best").GetBoolean());
        foreach (var topo in new[] { "serial", "parallel" })
        {
            // Validating between steps changes no training step.
            Assert.Equal(Losses(plain, topo), Losses(curve, topo));
            Assert.Equal(Losses(plain, topo), Losses(best, topo));

            var points = Curve(curve, topo);
            Assert.Equal([0, 2, 4], points.Select(p => p.Step));
            Assert.Equal(T(plain, topo).GetProperty("initial_validation_loss").GetDouble(), points[0].Loss);
            Assert.Equal(T(plain, topo).GetProperty("validation_loss").GetDouble(), points[^1].Loss);
            Assert.Equal(Curve(plain, topo).Select(p => p.Step), new[] { 0, 4 });
            var lowest = points.MinBy(p => p.Loss);
            Assert.Equal(lowest.Step, T(curve, topo).GetProperty("best_validation_step").GetInt32());
            Assert.Equal(lowest.Loss, T(curve, topo).GetProperty("best_validation_loss").GetDouble());
            Assert.Equal(4, T(curve, topo).GetProperty("weights_step").GetInt32());

            // Keep-best reports (and samples) the weights of the lowest validation: its loss is that one's.
            Assert.Equal(points, Curve(best, topo));
            Assert.True(lowest.Step < 4, $"{topo}: the last step was the best ({string.Join(", ", points)}); the test needs an earlier one");
            Assert.Equal(lowest.Step, T(best, topo).GetProperty("weights_step").GetInt32());
            Assert.Equal(lowest.Loss, T(best, topo).GetProperty("validation_loss").GetDouble());
        }

        string report = File.ReadAllText(bestFolder.File("report.md"));
        Assert.Contains("Validation loss every 2 steps (the same 4 held-out batches", report);
        Assert.Contains("validation loss of the kept weights (step)", report);
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "2", "--keep-best"), 2, "--keep-best needs --validate-every");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "2", "--validate-every", "-1"), 2, "--validate-every must be 0 or more");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "2", "--validation-batches", "0"), 2, "--validation-batches must be at least 1");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "2", "--loop-correction", "-2"), 2, "--loop-correction must be 0 (off)");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "2", "--loop-correction", "2", "--loop-correction-mode", "median"), 2, "--loop-correction-mode must be mean or scale, got 'median'");
        AssertCleanFailure(Mobius("train", "--steps", "2", "--loop-correction", "2", "--loop-correction-momentum", "1", "--out", bestFolder.File("x.safetensors")), 2, "--loop-correction-momentum must be in [0, 1)");

        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "2", "--loop-correction-warmup", "2"), 2, "--loop-correction-warmup needs --loop-correction K");
        AssertCleanFailure(Mobius("train", "--steps", "2", "--loop-correction", "2", "--loop-correction-warmup", "-1", "--out", bestFolder.File("x.safetensors")), 2, "--loop-correction-warmup must be 0 (none)");

        // The scaled correction runs end to end and says so in the JSON: exact steps 1 and 2 (the warm-up), then step 3 the loop's.
        var scaled = Mobius("compare", "--config", "micro", "--steps", "3", "--samples", "0", "--json", "--out", bestFolder.File("scaled"), "--seed", "4",
            "--loop-correction", "3", "--loop-correction-warmup", "2");  // scale is the default mode
        Assert.True(scaled.Code == 0, scaled.Out + scaled.Err);
        using var scaledDoc = JsonDocument.Parse(scaled.Out);
        Assert.Equal("scale", scaledDoc.RootElement.GetProperty("loop_correction_mode").GetString());
        Assert.Equal(3, scaledDoc.RootElement.GetProperty("loop_correction_every").GetInt32());
        Assert.Equal(2, scaledDoc.RootElement.GetProperty("loop_correction_warmup").GetInt32());
        Assert.Contains("(and at each of the first 2)", File.ReadAllText(Path.Combine(bestFolder.File("scaled"), "report.md")));
        var fitted = scaledDoc.RootElement.GetProperty("parallel").GetProperty("loop_coefficients").EnumerateObject().ToList();
        Assert.NotEmpty(fitted);
        Assert.All(fitted, c => Assert.True(c.Name.Contains(".temp_", StringComparison.Ordinal) && c.Value.GetDouble() is >= 0 and <= 1, $"{c.Name}: {c.Value}"));
        Assert.False(scaledDoc.RootElement.GetProperty("serial").TryGetProperty("loop_coefficients", out _), "serial has no loop to correct");
        Assert.Contains("fitted coefficients at the end of training, by temporal layer", File.ReadAllText(Path.Combine(bestFolder.File("scaled"), "report.md")));
    }

    [Fact]
    public void Demo_runs_the_comparison_on_tiny_from_the_shipped_checkpoint_and_writes_the_report()
    {
        using var folder = new TempFolder();
        var r = Mobius("demo", "--steps", "2", "--samples", "1", "--validate-every", "1", "--seed", "4", "--out", folder.Path);
        Assert.True(r.Code == 0, r.Out + r.Err);
        Assert.Contains("serial vs parallel", r.Out, StringComparison.Ordinal);
        Assert.Contains("parallel / serial", r.Out, StringComparison.Ordinal);
        Assert.DoesNotContain("checkpoint is missing", r.Out + r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("checkpoints are missing", r.Out + r.Err, StringComparison.Ordinal);
        Assert.Contains("samples: ", r.Out, StringComparison.Ordinal);

        // sample without --checkpoint draws clips with the shipped text-to-video model.
        var sample = Mobius("sample", "--prompt", "a red heart moving right", "--steps", "2", "--out", folder.File("clip.gif"));
        Assert.True(sample.Code == 0, sample.Out + sample.Err);
        Assert.Contains($"({ModelConfig.Get("tiny").Frames} frames, ", sample.Out, StringComparison.Ordinal);
        Assert.Contains("starting noise correlated 0.9 across each clip's frames", sample.Out, StringComparison.Ordinal);

        using var doc = JsonDocument.Parse(File.ReadAllText(folder.File("result.json")));
        var root = doc.RootElement;
        Assert.Equal("tiny", root.GetProperty("config").GetString());
        Assert.Equal(2, root.GetProperty("steps").GetInt32());
        // The shipped text-to-video model, fine-tuned on the motion and frame noise it was trained with, at the fine-tuning rate.
        Assert.Equal("tiny-t2v.safetensors", root.GetProperty("start").GetProperty("checkpoint").GetString());
        Assert.Equal("serial", root.GetProperty("start").GetProperty("topology").GetString());
        Assert.Equal(["MoveRight"], root.GetProperty("motions").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(0, root.GetProperty("frame_noise_correlation").GetDouble());
        Assert.Equal(TextToVideo.DefaultSampleFrameNoise, root.GetProperty("sample_frame_noise").GetDouble(), 1e-6);
        Assert.Equal(4, root.GetProperty("guidance").GetDouble());
        Assert.Equal(1e-4, root.GetProperty("learning_rate").GetDouble(), 1e-9);
        Assert.Equal(2, root.GetProperty("batch").GetInt32());
        Assert.Equal(4, root.GetProperty("seed").GetInt32());
        Assert.Equal(16, root.GetProperty("validation_batches").GetInt32());  // the demo's: 32 held-out clips, paired
        Assert.Equal(32, root.GetProperty("difference").GetProperty("validation_loss").GetProperty("pairs").GetInt32());
        Assert.Single(root.GetProperty("prompts").EnumerateArray());
        foreach (var topo in new[] { "serial", "parallel" })
        {
            var t = root.GetProperty(topo);
            Assert.Equal([0, 1, 2], t.GetProperty("validation_curve").EnumerateArray().Select(p => p.GetProperty("step").GetInt32()));
            // The shipped model predicts the noise well from the start; a random one is near 1.
            Assert.InRange(t.GetProperty("initial_validation_loss").GetDouble(), 1e-4, 0.1);
            Assert.Single(t.GetProperty("sample_scores").EnumerateArray());
        }

        foreach (var file in new[] { "report.md", "memory.png", "time.png", "loss.png", "serial-samples.gif", "parallel-samples.gif", "serial-frames.png", "parallel-frames.png" })
        {
            Assert.True(File.Exists(folder.File(file)), $"{file} not written");
        }

        // From the text-to-image model: the temporal layers from the identity, every motion, frame noise 0.9, the short run's rate.
        string fromImage = folder.File("from-image");
        var i = Mobius("demo", "--checkpoint", Path.Combine(AppContext.BaseDirectory, "models", "tiny-t2i.safetensors"), "--steps", "1", "--samples", "0", "--validate-every", "0", "--frontier", "0", "--out", fromImage);
        Assert.True(i.Code == 0, i.Out + i.Err);
        using (var image = JsonDocument.Parse(File.ReadAllText(Path.Combine(fromImage, "result.json"))))
        {
            var ir = image.RootElement;
            Assert.Equal("spatial", ir.GetProperty("start").GetProperty("topology").GetString());
            Assert.Equal(JsonValueKind.Null, ir.GetProperty("motions").ValueKind);
            Assert.Equal(0.9, ir.GetProperty("frame_noise_correlation").GetDouble(), 1e-6);
            Assert.Equal(1e-3, ir.GetProperty("learning_rate").GetDouble(), 1e-9);
        }

        AssertCleanFailure(Mobius("demo", "--samples", "-1", "--out", folder.Path), 2, "--samples must be 0 or more");
        AssertCleanFailure(Mobius("demo", "--steps", "0", "--out", folder.Path), 2, "--steps must be at least 1");
    }

    [Fact]
    public void Compare_json_has_both_topologies_and_the_ratios_and_writes_the_report()
    {
        using var folder = new TempFolder();
        var r = Mobius("compare", "--config", "micro", "--steps", "3", "--batch", "3", "--samples", "1", "--sample-steps", "2", "--json", "--out", folder.Path, "--seed", "3");
        Assert.True(r.Code == 0, r.Out + r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal("micro", root.GetProperty("config").GetString());
        Assert.Equal("loop", root.GetProperty("bridge").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("motions").ValueKind);
        Assert.Equal(1e-4, root.GetProperty("learning_rate").GetDouble(), 1e-9);
        Assert.Equal(TrainOptions.DefaultMinSnrGamma, root.GetProperty("min_snr_gamma").GetDouble(), 1e-9);
        Assert.Equal(ModelConfig.DefaultFrameNoiseCorrelation, root.GetProperty("frame_noise_correlation").GetDouble(), 1e-6);
        Assert.Equal(3, root.GetProperty("steps").GetInt32());
        Assert.Equal(3, root.GetProperty("batch").GetInt32());
        foreach (var topo in new[] { "serial", "parallel" })
        {
            var t = root.GetProperty(topo);
            foreach (var key in new[] { "step_ms_median", "step_ms_mean", "peak_bytes", "saved_activation_bytes", "trainable_params", "final_loss", "validation_loss", "motion_score" })
            {
                Assert.True(t.TryGetProperty(key, out _), $"{topo}.{key} missing");
            }

            Assert.True(t.GetProperty("memory").GetProperty("weights").GetInt64() > 0);
            Assert.True(t.GetProperty("peak_bytes").GetInt64() > 0);
            Assert.InRange(t.GetProperty("motion_score").GetDouble(), 0, 1);
        }

        // Both start as the frozen text-to-image model: the same loss on the same held-out batches.
        Assert.Equal(root.GetProperty("serial").GetProperty("initial_validation_loss").GetDouble(),
            root.GetProperty("parallel").GetProperty("initial_validation_loss").GetDouble(), 1e-5);

        var ratio = root.GetProperty("ratio");
        double saved = ratio.GetProperty("saved_activation_bytes").GetDouble();
        Assert.InRange(saved, 0.01, 0.99);
        Assert.InRange(ratio.GetProperty("peak_bytes").GetDouble(), 0.1, 0.99);
        Assert.Equal(root.GetProperty("parallel").GetProperty("step_ms_mean").GetDouble() / root.GetProperty("serial").GetProperty("step_ms_mean").GetDouble(),
            ratio.GetProperty("step_ms_mean").GetDouble(), 1e-9);
        foreach (var file in new[] { "report.md", "result.json", "memory.png", "time.png", "loss.png", "serial-samples.gif", "parallel-samples.gif", "serial-frames.png", "parallel-frames.png" })
        {
            Assert.True(File.Exists(folder.File(file)), $"{file} not written");
        }

        // The validation loss paired clip by clip over the 4 held-out batches of the config's batch (not --batch):
        // its mean is the difference of the two losses; one sample gives no motion-score spread.
        var difference = root.GetProperty("difference");
        var vd = difference.GetProperty("validation_loss");
        Assert.Equal(4 * ModelConfig.Get("micro").Batch, vd.GetProperty("pairs").GetInt32());
        Assert.Equal(root.GetProperty("parallel").GetProperty("validation_loss").GetDouble() - root.GetProperty("serial").GetProperty("validation_loss").GetDouble(),
            vd.GetProperty("mean").GetDouble(), 1e-6);
        Assert.InRange(vd.GetProperty("mean").GetDouble(), vd.GetProperty("low").GetDouble(), vd.GetProperty("high").GetDouble());
        Assert.Equal(JsonValueKind.Null, difference.GetProperty("motion_score").ValueKind);

        string report = File.ReadAllText(folder.File("report.md"));
        Assert.Contains("(serial-frames.png)", report, StringComparison.Ordinal);
        Assert.Contains("(parallel-frames.png)", report, StringComparison.Ordinal);
        Assert.Contains("| validation loss | ", report[report.IndexOf("Quality, parallel minus serial", StringComparison.Ordinal)..], StringComparison.Ordinal);
        Assert.Contains("| training time to parallel's validation loss (", report, StringComparison.Ordinal);
        Assert.Equal(root.GetProperty("parallel").GetProperty("validation_loss").GetDouble(), root.GetProperty("time_to_parallel_loss").GetProperty("loss").GetDouble());
    }

    [Fact]
    public void Compare_on_one_motion_with_a_ring_bridge_trains_validates_and_samples_that_motion()
    {
        using var folder = new TempFolder();
        var r = Mobius("compare", "--config", "micro", "--steps", "2", "--samples", "2", "--sample-steps", "2", "--json", "--out", folder.Path,
            "--motion", "move-right", "--bridge", "additive", "--min-snr", "0", "--frame-noise", "0.3", "--sample-frame-noise", "0.5", "--guidance", "2.5");
        Assert.True(r.Code == 0, r.Out + r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal("additive", root.GetProperty("bridge").GetString());
        Assert.Equal(["MoveRight"], root.GetProperty("motions").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(0, root.GetProperty("min_snr_gamma").GetDouble());
        Assert.Equal(0.3, root.GetProperty("frame_noise_correlation").GetDouble(), 1e-6);
        Assert.Equal(0.5, root.GetProperty("sample_frame_noise").GetDouble(), 1e-6);
        Assert.Equal(2.5, root.GetProperty("guidance").GetDouble(), 1e-6);
        Assert.Contains("guidance 2.5, seed 1, starting noise correlated 0.5 across a clip's frames", File.ReadAllText(Path.Combine(folder.Path, "report.md")), StringComparison.Ordinal);
        var prompts = root.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToList();
        Assert.Equal(2, prompts.Count);
        Assert.Equal(2, prompts.Distinct().Count());
        Assert.All(prompts, p => Assert.Contains("right", p, StringComparison.Ordinal));

        // The ring's adapters and fuse train beside the temporal layers: more trainable parameters than serial.
        Assert.True(root.GetProperty("parallel").GetProperty("trainable_params").GetInt64() > root.GetProperty("serial").GetProperty("trainable_params").GetInt64());
        Assert.Contains("additive bridge", File.ReadAllText(folder.File("report.md")), StringComparison.Ordinal);
    }

    [Fact]
    public void Compare_takes_the_held_out_captions_again_when_asked_for_more_samples_than_there_are()
    {
        using var folder = new TempFolder();
        var r = Mobius("compare", "--config", "micro", "--steps", "1", "--samples", "40", "--sample-steps", "1", "--out", folder.Path, "--motion", "move-right");
        Assert.True(r.Code == 0, r.Out + r.Err);
        using var doc = JsonDocument.Parse(File.ReadAllText(folder.File("result.json")));
        var prompts = doc.RootElement.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToList();
        int distinct = prompts.Distinct().Count();
        Assert.Equal(40, prompts.Count);
        Assert.InRange(distinct, 2, 39);
        Assert.All(Enumerable.Range(0, 40), k => Assert.Equal(prompts[k % distinct], prompts[k]));  // in turn, in the same order
        Assert.Equal(40, doc.RootElement.GetProperty("serial").GetProperty("sample_scores").GetArrayLength());
        Assert.Equal(40, doc.RootElement.GetProperty("difference").GetProperty("motion_match").GetProperty("pairs").GetInt32());
        string message = $"has {distinct} distinct captions for these clips, so the 40 samples take them again in turn";
        Assert.Contains(message, File.ReadAllText(folder.File("report.md")), StringComparison.Ordinal);
        Assert.Contains(message, Flat(r.Out), StringComparison.Ordinal);
    }

    [Fact]
    public void A_checkpoint_records_its_math_and_a_resume_on_the_cuda_backend_keeps_it()
    {
        using var folder = new TempFolder();
        string t2i = folder.File("t2i.safetensors"), video = folder.File("video.safetensors"), onCpu = folder.File("cpu.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "1", "--out", t2i).Code);
        Assert.Equal("fp32", Checkpoint.Load(t2i).Extra["math"]);
        var a = Run("sim", "train", "--topology", "parallel", "--from", t2i, "--steps", "1", "--backend", "cuda", "--math", "tf32", "--out", video);
        Assert.True(a.Code == 0, a.Out + a.Err);
        Assert.Equal("tf32", Checkpoint.Load(video).Extra["math"]);
        Assert.Contains("tf32 tensor cores", Flat(Mobius("info", "--checkpoint", video).Out));

        // Resumed on the cuda backend without --math: the run's TF32; on the cpu backend: fp32, not a refusal
        var b = Run("sim", "train", "--topology", "parallel", "--resume", video, "--steps", "1", "--backend", "cuda", "--out", video);
        Assert.True(b.Code == 0, b.Out + b.Err);
        Assert.Equal(("tf32", 2), (Checkpoint.Load(video).Extra["math"], Checkpoint.Load(video).Step));
        var c = Mobius("train", "--topology", "parallel", "--resume", video, "--steps", "1", "--out", onCpu);
        Assert.True(c.Code == 0, c.Out + c.Err);
        Assert.Equal("fp32", Checkpoint.Load(onCpu).Extra["math"]);
    }

    [Fact]
    public void A_resumed_train_run_takes_the_options_its_checkpoint_records_and_names_those_changed()
    {
        using var folder = new TempFolder();
        string t2i = folder.File("t2i.safetensors"), straight = folder.File("straight.safetensors"), part = folder.File("part.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "1", "--out", t2i).Code);
        string[] recipe = ["--lr", "0.003", "--batch", "3", "--loop-correction", "2", "--loop-correction-mode", "mean", "--motion", "move-right", "--seed", "4", "--frozen-weights", "bf16", "--saved-activations", "int8", "--optimizer-state", "bf16"];
        var a = Mobius(["train", "--topology", "parallel", "--from", t2i, "--steps", "4", "--out", straight, .. recipe]);
        Assert.True(a.Code == 0, a.Out + a.Err);
        var b = Mobius(["train", "--topology", "parallel", "--from", t2i, "--steps", "3", "--out", part, .. recipe]);
        Assert.True(b.Code == 0, b.Out + b.Err);

        // Resumed with no option but the run's length: the recorded learning rate, correction, motions and seed.
        var c = Mobius("train", "--topology", "parallel", "--resume", part, "--steps", "1", "--out", part);
        Assert.True(c.Code == 0, c.Out + c.Err);
        Assert.Contains("with the options of the run that wrote it", c.Out);
        var expected = Checkpoint.Load(straight);
        var got = Checkpoint.Load(part);
        Assert.Equal(4, got.Step);
        Assert.Equal(expected.TrainOptions!.ToJson(), got.TrainOptions!.ToJson());
        Assert.Equal("move-right", got.Extra["motions"]);
        Assert.Equal(3, got.TrainOptions!.Batch);
        Assert.Equal(global::Mobius.Engine.DType.BFloat16, got.TrainOptions!.FrozenWeights);
        Assert.Equal(global::Mobius.Engine.DType.Int8Blocks, got.TrainOptions!.SavedActivations);
        Assert.Equal(global::Mobius.Engine.DType.BFloat16, got.TrainOptions!.OptimizerState);
        Assert.Equal(4, got.Seed);
        Assert.Equal(LoopCorrectionMode.Mean, got.LoopCorrection!.Mode);
        foreach (var (name, values) in expected.Unet)
        {
            Assert.True(values.AsSpan().SequenceEqual(got.Unet[name]), $"{name} differs from the uninterrupted run");
        }

        // Options given again on resume override the recorded ones, and the run says so; the seed cannot change.
        var d = Mobius("train", "--topology", "parallel", "--resume", part, "--steps", "1", "--lr", "0.001", "--seed", "9", "--out", folder.File("changed.safetensors"));
        Assert.True(d.Code == 0, d.Out + d.Err);
        Assert.Contains("--lr 0.001 (the run had 0.003)", d.Out);
        Assert.Contains("will not continue exactly", d.Out);
        Assert.Contains("--seed 9 ignored: a resumed run keeps its seed, 4", d.Out);
        Assert.Equal(0.001f, Checkpoint.Load(folder.File("changed.safetensors")).TrainOptions!.LearningRate);
    }

    /// <summary>Runs mobius until a line of its output contains <paramref name="marker"/>, then sends it SIGTERM; its exit code and the rest of its output.</summary>
    private static async Task<(int Code, string Output)> Interrupted(string marker, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "mobius.dll"));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var cancel = TestContext.Current.CancellationToken;
        var stderr = p.StandardError.ReadToEndAsync(cancel);
        string? line;
        var seen = new System.Text.StringBuilder();
        while ((line = await p.StandardOutput.ReadLineAsync(cancel)) is not null && !line.Contains(marker, StringComparison.Ordinal))
        {
            seen.AppendLine(line);
        }

        if (line is null)
        {
            Assert.Fail($"no line with '{marker}': {seen}{await stderr}");
        }

        using (var kill = Process.Start("kill", ["-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync(cancel);
        }

        string rest = await p.StandardOutput.ReadToEndAsync(cancel);
        Assert.True(p.WaitForExit(120_000), "mobius did not stop after SIGTERM");
        return (p.ExitCode, rest + await stderr);
    }

    [Fact]
    public async Task An_interrupted_compare_finishes_its_report_over_the_steps_taken()
    {
        Assert.SkipWhen(OperatingSystem.IsWindows(), "sends SIGTERM with kill");
        using var folder = new TempFolder();
        string outDir = folder.File("cmp");
        var (code, rest) = await Interrupted("parallel train step 1/", "compare", "--config", "micro", "--steps", "100000", "--samples", "1", "--sample-steps", "2", "--out", outDir);
        Assert.True(code == 130, $"exit {code}:\n{rest}");
        Assert.Contains("stopping training after this step", rest);
        Assert.Contains("stopped early", rest);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "result.json")));
        int steps = json.RootElement.GetProperty("steps").GetInt32();
        Assert.InRange(steps, 1, 99_999);
        Assert.Equal(100_000, json.RootElement.GetProperty("steps_requested").GetInt32());
        Assert.Equal(steps, json.RootElement.GetProperty("parallel").GetProperty("losses").GetArrayLength());
        Assert.Contains($"Stopped early: {steps} of the 100000 steps", File.ReadAllText(Path.Combine(outDir, "report.md")));
        Assert.NotEmpty(Directory.GetFiles(outDir, "parallel-*.gif"));  // the samples were still drawn, after the stop
    }

    [Fact]
    public async Task A_cancelled_or_diverged_train_run_keeps_its_last_whole_step()
    {
        Assert.SkipWhen(OperatingSystem.IsWindows(), "sends SIGTERM with kill");
        using var folder = new TempFolder();
        string t2i = folder.File("t2i.safetensors"), video = folder.File("video.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "1", "--out", t2i).Code);

        // SIGTERM (as Ctrl-C) in the middle of a long run: the steps taken are saved, resumable, and the exit code says cancelled.
        // (Not SIGINT: a shell without job control starts background jobs with SIGINT ignored, and the runtime keeps it so.)
        var (code, rest) = await Interrupted("step 1 (", "train", "--from", t2i, "--steps", "100000", "--out", video);
        Assert.True(code == 130, $"exit {code}:\n{rest}");
        var saved = Checkpoint.Load(video);
        Assert.InRange(saved.Step, 1, 99_999);
        Assert.Contains($"cancelled: saved {video} after step {saved.Step}", rest);
        Assert.Equal(saved.Step, saved.OptimizerSteps);

        var resumed = Mobius("train", "--resume", video, "--steps", "1", "--out", video);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.Contains($"after step {saved.Step + 1}", resumed.Out);

        // A loss that turns non-finite: the last finite step is kept, and the failure is one message.
        string diverged = folder.File("diverged.safetensors");
        var d = Mobius("train", "--from", t2i, "--steps", "5", "--lr", "1e30", "--out", diverged);
        Assert.True(d.Code == 1, d.Out + d.Err);
        Assert.Contains("is not finite: saved", d.Out);
        Assert.DoesNotContain("   at ", d.Out + d.Err);
        Assert.InRange(Checkpoint.Load(diverged).Step, 1, 4);
    }

    [Fact]
    public void A_run_out_of_memory_after_its_first_step_keeps_its_last_whole_step()
    {
        // Step 1 allocates AdamW's moments after its backward, so step 2 peaks higher: under a memory limit between
        // the two peaks (in allocator blocks, what the limit counts) step 2 runs out of memory, as the parallel
        // topology's planned ms256 batch did on an H200. The run keeps step 1's weights and optimizer, resumable.
        using var folder = new TempFolder();
        var config = ModelConfig.Get("micro");
        var options = new TrainOptions { Seed = Seeds.One, LearningRate = 1e-3f };
        long first, second;
        Dictionary<string, float[]> afterFirst;
        using (var cpu = new global::Mobius.Engine.Cpu.CpuBackend(1))
        using (var model = TextToVideo.Create(cpu, config, Topology.Parallel, options.Seed))
        using (var twin = new Trainer(model, Comparison.Data(config, options.Seed, Split.Train), Stage.TextToVideo, options))
        {
            first = twin.TrainStep().Memory.PeakBlockBytes;
            afterFirst = model.Unet.StateDict();
            second = twin.TrainStep().Memory.PeakBlockBytes;
        }

        Assert.True(second > first + 4096, $"step 2 peaks at {second} bytes in blocks, step 1 at {first}");
        string path = folder.File("oom.safetensors");
        using (var cpu = new global::Mobius.Engine.Cpu.CpuBackend(1, memoryLimitBytes: (first + second) / 2))
        using (var model = TextToVideo.Create(cpu, config, Topology.Parallel, options.Seed))
        using (var trainer = new Trainer(model, Comparison.Data(config, options.Seed, Split.Train), Stage.TextToVideo, options))
        {
            Assert.Throws<global::Mobius.Engine.OutOfDeviceMemoryException>(() =>
                global::Mobius.Cli.Ui.Train("oom", trainer, 3, 0, path, new Dictionary<string, string>(), TestContext.Current.CancellationToken));
            Assert.Equal(1, trainer.StepsDone);
        }

        var saved = Checkpoint.Load(path);
        Assert.Equal(1, saved.Step);
        Assert.Equal(1, saved.OptimizerSteps);
        Assert.Equal(afterFirst.Keys.Order(StringComparer.Ordinal), saved.Unet.Keys.Order(StringComparer.Ordinal));
        Assert.All(afterFirst, kv => Assert.Equal(kv.Value, saved.Unet[kv.Key]));
    }

    [Fact]
    public void A_resumed_keep_best_run_replaces_the_best_weights_only_with_better_ones()
    {
        using var folder = new TempFolder();
        string t2i = folder.File("t2i.safetensors"), video = folder.File("v.safetensors"), best = folder.File("v.best.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "1", "--out", t2i).Code);
        var first = Mobius("train", "--from", t2i, "--steps", "2", "--validate-every", "1", "--keep-best", "--out", video);
        Assert.True(first.Code == 0, first.Out + first.Err);
        Assert.True(float.TryParse(Checkpoint.Load(best).Extra["validation_loss"], System.Globalization.CultureInfo.InvariantCulture, out float recorded) && recorded > 0);

        // The best file says what it scored; a resumed run measures against that, not against nothing.
        void Record(string loss)
        {
            var (tensors, meta) = global::Mobius.Engine.IO.SafeTensors.Read(best);
            meta["validation_loss"] = loss;
            global::Mobius.Engine.IO.SafeTensors.Write(best, tensors, meta);
        }

        Record("1e-9");
        int step = Checkpoint.Load(best).Step;
        var resumed = Mobius("train", "--resume", video, "--steps", "1", "--validate-every", "1", "--keep-best", "--out", video);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.Contains("best so far: validation loss 0.0000 after step " + step, resumed.Out);
        Assert.Equal(step, Checkpoint.Load(best).Step);

        Record("1e9");
        resumed = Mobius("train", "--resume", video, "--steps", "1", "--validate-every", "1", "--keep-best", "--out", video);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.Equal(4, Checkpoint.Load(best).Step);

        // A best loss over another number of validation batches does not compare: the resumed run starts its own.
        Record("1e-9");
        resumed = Mobius("train", "--resume", video, "--steps", "1", "--validate-every", "1", "--validation-batches", "2", "--keep-best", "--out", video);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.DoesNotContain("best so far", resumed.Out);
        Assert.Equal(5, Checkpoint.Load(best).Step);
    }

    [Fact]
    public void Pretrain_train_resume_and_sample_chain_together()
    {
        using var folder = new TempFolder();
        string t2i = folder.File("t2i.safetensors"), video = folder.File("video.safetensors"), gif = folder.File("clip.gif");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "2", "--out", t2i).Code);
        var trained = Mobius("train", "--topology", "serial", "--from", t2i, "--steps", "2", "--out", video);
        Assert.True(trained.Code == 0, trained.Out + trained.Err);

        // train names the memory of its steps: what plan gives for the same config and batch, as the CPU measured it.
        using (var plan = JsonDocument.Parse(Mobius("plan", "--config", "micro", "--json").Out))
        {
            var serialPlan = plan.RootElement.GetProperty("serial");
            string MiB(string key) => (serialPlan.GetProperty(key).GetInt64() / 1048576.0).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
            Assert.Contains($"memory: {MiB("peak_bytes")} MiB at the peak of a step, {MiB("saved_activation_bytes")} MiB of activations kept for backward (the largest of the 2 steps)", Flat(trained.Out));
        }

        var resumed = Mobius("train", "--topology", "serial", "--resume", video, "--steps", "1", "--out", video);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.Contains("after step 3", resumed.Out);
        var s = Mobius("sample", "--checkpoint", video, "--prompt", "a red heart moving left", "--steps", "2", "--out", gif);
        Assert.True(s.Code == 0, s.Out + s.Err);
        Assert.True(new FileInfo(gif).Length > 100);
        Assert.Contains("\"a red heart moving left\": motion score", s.Out);
        var narrow = Mobius("sample", "--checkpoint", video, "--prompt", "a red heart moving left", "--steps", "2", "--frozen-weights", "bf16", "--out", folder.File("bf16.gif"));
        Assert.True(narrow.Code == 0, narrow.Out + narrow.Err);
        Assert.True(new FileInfo(folder.File("bf16.gif")).Length > 100);
        AssertCleanFailure(Mobius("sample", "--checkpoint", video, "--prompt", "a red heart", "--frozen-weights", "half"), 2, "--frozen-weights must be fp32, bf16 or int8");

        // Several prompts, several clips each: a grid (a row per prompt), its captions and its frames; each clip
        // whose prompt names a motion is scored, the others are not.
        string grid = folder.File("grid.gif");
        var g = Mobius("sample", "--checkpoint", video, "--prompt", "a red heart moving left", "--prompt", "a blue star", "--count", "2", "--steps", "2", "--out", grid);
        Assert.True(g.Code == 0, g.Out + g.Err);
        Assert.Equal(["0 0: a red heart moving left", "0 1: a red heart moving left", "1 0: a blue star", "1 1: a blue star"], File.ReadAllLines(folder.File("grid.txt")));
        Assert.True(new FileInfo(folder.File("grid-frames.png")).Length > 100);
        var micro = ModelConfig.Get("micro");
        var size = SixLabors.ImageSharp.Image.Identify(grid);
        Assert.Equal((2 * micro.Width * 4 + 3 * 2 * 4, 2 * micro.Height * 4 + 3 * 2 * 4), (size.Width, size.Height));   // 2 x 2 clips and three 2-pixel gaps a side, shown x4
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(g.Out, "clip \\d+, .*: motion score").Count);
        Assert.Contains("clip 2, \"a red heart moving left\": motion score", g.Out);
        Assert.Contains("mean of 2 clips: motion score", g.Out);
        AssertCleanFailure(Mobius("sample", "--checkpoint", video, "--prompt", "a red heart", "--count", "0"), 2, "--count must be 1..64");

        // The serial text-to-video model fine-tunes in the parallel topology (the loop bridge is serial's model);
        // a ring bridge, with parameters serial lacks, is refused with one message and exit 3.
        string tuned = folder.File("tuned.safetensors");
        var f = Mobius("train", "--topology", "parallel", "--from", video, "--steps", "1", "--out", tuned);
        Assert.True(f.Code == 0, f.Out + f.Err);
        Assert.Equal(Topology.Parallel, Checkpoint.Load(tuned).Topology);
        AssertCleanFailure(Mobius("train", "--topology", "parallel", "--bridge", "skip", "--from", video, "--steps", "1", "--out", folder.File("ring")), 3,
            "a Serial checkpoint cannot be loaded as Parallel with the skip bridge");

        // compare fine-tunes a text-to-video model in both topologies, on the motions and frame noise it was trained with.
        string leftward = folder.File("leftward.safetensors");
        Assert.Equal(0, Mobius("train", "--topology", "serial", "--from", t2i, "--motion", "move-left", "--frame-noise", "0", "--steps", "1", "--out", leftward).Code);
        var c = Mobius("compare", "--checkpoint", leftward, "--steps", "1", "--samples", "0", "--json", "--out", folder.File("ft"));
        Assert.True(c.Code == 0, c.Out + c.Err);
        using (var doc = JsonDocument.Parse(c.Out))
        {
            var root = doc.RootElement;
            Assert.Equal(["MoveLeft"], root.GetProperty("motions").EnumerateArray().Select(m => m.GetString()));
            Assert.Equal(0, root.GetProperty("frame_noise_correlation").GetDouble());
            Assert.Equal("serial", root.GetProperty("start").GetProperty("topology").GetString());
            Assert.Equal(1, root.GetProperty("start").GetProperty("step").GetInt32());
            Assert.Equal(root.GetProperty("serial").GetProperty("initial_validation_loss").GetDouble(), root.GetProperty("parallel").GetProperty("initial_validation_loss").GetDouble());
        }

        Assert.Contains("fine-tuned in both topologies", File.ReadAllText(Path.Combine(folder.File("ft"), "report.md")));

        // Validation every 2 of 3 steps (and after the last), the best weights kept beside the output.
        string parallel = folder.File("parallel.safetensors");
        string log = folder.File("parallel.csv");
        var v = Mobius("train", "--topology", "parallel", "--from", t2i, "--steps", "3", "--validate-every", "2", "--keep-best", "--out", parallel, "--log", log);
        Assert.True(v.Code == 0, v.Out + v.Err);
        var losses = System.Text.RegularExpressions.Regex.Matches(v.Out, @"validation loss ([0-9.]+) after step (\d+)")
            .Select(m => (Loss: double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), Step: int.Parse(m.Groups[2].Value))).ToList();
        Assert.Equal([2, 3], losses.Select(l => l.Step));
        Assert.Contains("validation loss before step 1", v.Out);
        var best = Checkpoint.Load(folder.File("parallel.best.safetensors"));
        Assert.Contains(best.Step, losses.Where(l => l.Loss == losses.Min(m => m.Loss)).Select(l => l.Step));  // (printed to 4 decimals)
        Assert.Equal(Topology.Parallel, best.Topology);
        Assert.Equal(3, Checkpoint.Load(parallel).Step);
        AssertCleanFailure(Mobius("train", "--from", t2i, "--steps", "1", "--keep-best", "--out", folder.File("x")), 2, "--keep-best needs --validate-every");

        // --log: a header and one line a step; the validation column holds the printed validations.
        var lines = File.ReadAllLines(log);
        Assert.Equal("step,loss,ms,grad_norm,validation_loss", lines[0]);
        Assert.Equal(4, lines.Length);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        Assert.Equal([1, 2, 3], rows.Select(r => int.Parse(r[0], System.Globalization.CultureInfo.InvariantCulture)));
        Assert.All(rows, r => Assert.True(float.IsFinite(float.Parse(r[1], System.Globalization.CultureInfo.InvariantCulture)) && double.Parse(r[2], System.Globalization.CultureInfo.InvariantCulture) > 0, string.Join(',', r)));
        Assert.Equal("", rows[0][4]);
        foreach (var (loss, step) in losses)
        {
            Assert.Equal(loss, double.Parse(rows[step - 1][4], System.Globalization.CultureInfo.InvariantCulture), 1e-4);
        }

        AssertCleanFailure(Mobius("train", "--from", t2i, "--steps", "1", "--out", folder.File("y"), "--log", Path.Combine(folder.Path, "no-such-folder", "log.csv")), 2, "cannot write the --log file");

        // An --out that cannot be written fails before the first step, not after the run.
        foreach (var bad in new[] { Mobius("train", "--from", t2i, "--steps", "1", "--out", Path.Combine(t2i, "under-a-file.safetensors")),
                                    Mobius("pretrain", "--config", "micro", "--steps", "1", "--out", Path.Combine(t2i, "under-a-file.safetensors")) })
        {
            AssertCleanFailure(bad, 2, "cannot write --out");
            Assert.DoesNotContain("step 1", bad.Out);
        }

        AssertCleanFailure(Mobius("train", "--from", t2i, "--steps", "1", "--out", folder.Path), 2, "is a folder");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--samples", "0", "--out", Path.Combine(t2i, "report")), 2, "cannot create the output folder");
    }

    [Fact]
    public void A_folder_of_gifs_trains_compares_and_samples_with_words_of_its_own()
    {
        using var folder = new TempFolder();
        string data = folder.File("gifs"), t2i = folder.File("t2i.safetensors"), video = folder.File("video.safetensors");
        var w = Mobius("clips", "--config", "micro", "--count", "12", "--out", data);
        Assert.True(w.Code == 0, w.Out + w.Err);
        Assert.Equal(12, Directory.GetFiles(data, "*.gif").Length);
        AssertCleanFailure(Mobius("clips", "--config", "micro", "--count", "3", "--out", data), 2, "already exists");
        AssertCleanFailure(Mobius("clips", "--count", "0", "--out", folder.File("none")), 2, "--count must be at least 1");

        // Give the first GIF and the held-out one (the 10th) captions with words no emoji caption has.
        string captions = Path.Combine(data, GifFolderClips.CaptionsFileName);
        var lines = File.ReadAllLines(captions);
        lines[0] = "{\"file\": \"clip-0001.gif\", \"caption\": \"a red dragon flying\"}";
        lines[9] = "{\"file\": \"clip-0010.gif\", \"caption\": \"the blue dragon flying\"}";
        File.WriteAllLines(captions, lines);

        // A model that does not know them says so before training; pretraining on the folder teaches them.
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--data", data, "--steps", "1", "--samples", "0", "--out", folder.File("x")), 3,
            $"{captions}:1: caption \"a red dragon flying\" has words the model does not know: \"dragon\", \"flying\"");
        var pre = Mobius("pretrain", "--config", "micro", "--data", data, "--steps", "2", "--out", t2i);
        Assert.True(pre.Code == 0, pre.Out + pre.Err);
        var pretrained = Checkpoint.Load(t2i);
        Assert.Contains("dragon", pretrained.Vocabulary);
        Assert.Contains("heart", pretrained.Vocabulary);   // the emoji captions' words too

        // Its latent codec is fitted to the folder's clips to train on.
        var micro = ModelConfig.Get("micro");
        var fitted = SpaceToDepthCodec.Fit(new GifFolderClips(data, micro.Frames, micro.Height, micro.Width).Subset(Split.Train));
        Assert.Equal(fitted.Scales, pretrained.CodecScales);
        Assert.Equal(fitted.Shifts, pretrained.CodecShifts);
        Assert.NotEqual(SpaceToDepthCodec.EmojiShifts, pretrained.CodecShifts);   // this folder's differ from the default: the check tells them apart

        var t = Mobius("train", "--from", t2i, "--data", data, "--steps", "2", "--validate-every", "1", "--out", video);
        Assert.True(t.Code == 0, t.Out + t.Err);
        Assert.Contains($"data: 12 GIFs in {data}: 11 to train on, 1 held out for validation", t.Out);
        Assert.Equal(data, Checkpoint.Load(video).Extra["data"]);
        var resumed = Mobius("train", "--resume", video, "--steps", "1", "--out", video);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.Contains($"data: 12 GIFs in {data}", resumed.Out);
        var sample = Mobius("sample", "--checkpoint", video, "--prompt", "a red dragon flying", "--steps", "2", "--out", folder.File("dragon.gif"));
        Assert.True(sample.Code == 0, sample.Out + sample.Err);

        var c = Mobius("compare", "--checkpoint", t2i, "--data", data, "--steps", "1", "--samples", "2", "--sample-steps", "2", "--json", "--out", folder.File("cmp"));
        Assert.True(c.Code == 0, c.Out + c.Err);
        using (var doc = JsonDocument.Parse(c.Out))
        {
            var root = doc.RootElement;
            Assert.Equal(data, root.GetProperty("data").GetProperty("folder").GetString());
            Assert.Equal((11, 1), (root.GetProperty("data").GetProperty("train_clips").GetInt32(), root.GetProperty("data").GetProperty("validation_clips").GetInt32()));
            Assert.Equal(["the blue dragon flying", "the blue dragon flying"], root.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()));  // the one held-out caption, twice
            Assert.Equal(JsonValueKind.Null, root.GetProperty("serial").GetProperty("motion_score").ValueKind);
        }

        Assert.Contains($"the GIFs of {data} (11 to train on, 1 held out", File.ReadAllText(Path.Combine(folder.File("cmp"), "report.md")));
        AssertCleanFailure(Mobius("compare", "--checkpoint", t2i, "--data", data, "--motion", "grow", "--steps", "1", "--out", folder.File("x")), 2, "--motion selects generated clips");
        AssertCleanFailure(Mobius("train", "--from", t2i, "--data", data, "--motion", "grow", "--steps", "1", "--out", folder.File("x")), 2, "--motion selects generated clips");

        // A damaged GIF fails before the first step, named with its captions line.
        File.WriteAllBytes(Path.Combine(data, "clip-0005.gif"), [.. "GIF89a"u8, 1, 2]);
        var bad = Mobius("train", "--from", t2i, "--data", data, "--steps", "1", "--out", folder.File("y.safetensors"));
        AssertCleanFailure(bad, 3, "clip-0005.gif");
        Assert.Contains("(listed on line 5 of captions.jsonl)", Flat(bad.Err + bad.Out));
        Assert.DoesNotContain("step 1", bad.Out);
        AssertCleanFailure(Mobius("train", "--from", t2i, "--data", folder.File("nowhere"), "--steps", "1", "--out", folder.File("y.safetensors")), 3, "GIF folder not found");
    }

    [Fact]
    public void Accumulate_ema_and_cosine_train_compare_resume_and_sample_as_documented()
    {
        using var folder = new TempFolder();
        string t2i = folder.File("t2i.safetensors"), video = folder.File("video.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "1", "--accumulate", "2", "--out", t2i).Code);
        Assert.Equal(2, Checkpoint.Load(t2i).TrainOptions!.Accumulate);
        var t = Mobius("train", "--from", t2i, "--batch", "1", "--accumulate", "3", "--steps", "1", "--out", video);
        Assert.True(t.Code == 0, t.Out + t.Err);
        var resumed = Mobius("train", "--resume", video, "--steps", "1", "--out", video);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.Contains("with the options of the run that wrote it", resumed.Out);
        Assert.Equal((2, 3, 1), (Checkpoint.Load(video).Step, Checkpoint.Load(video).TrainOptions!.Accumulate, Checkpoint.Load(video).TrainOptions!.Batch));

        var c = Mobius("compare", "--config", "micro", "--steps", "2", "--batch", "1", "--accumulate", "2", "--samples", "0", "--json", "--out", folder.File("cmp"));
        Assert.True(c.Code == 0, c.Out + c.Err);
        using (var doc = JsonDocument.Parse(c.Out))
        {
            Assert.Equal((1, 2), (doc.RootElement.GetProperty("batch").GetInt32(), doc.RootElement.GetProperty("accumulate").GetInt32()));
        }

        Assert.Contains("x 2 batches accumulated", File.ReadAllText(Path.Combine(folder.File("cmp"), "report.md")));
        AssertCleanFailure(Mobius("train", "--from", t2i, "--accumulate", "0", "--steps", "1", "--out", folder.File("x")), 2, "--accumulate must be at least 1");

        // --ema: validated with the average, kept in the checkpoint, drawn with by sample unless --no-ema.
        string averaged = folder.File("ema.safetensors");
        var e = Mobius("train", "--from", t2i, "--steps", "2", "--ema", "0.9", "--validate-every", "1", "--out", averaged);
        Assert.True(e.Code == 0, e.Out + e.Err);
        Assert.Contains("(EMA weights)", e.Out);
        Assert.NotNull(Checkpoint.Load(averaged).Ema);
        var described = Mobius("info", "--checkpoint", averaged);
        Assert.Contains("yes, decay 0.9 (", described.Out);
        Assert.Contains("yes: optimizer state after 2 steps", described.Out);
        var withEma = Mobius("sample", "--checkpoint", averaged, "--prompt", "a red heart moving left", "--steps", "2", "--out", folder.File("a.gif"));
        Assert.True(withEma.Code == 0, withEma.Out + withEma.Err);
        Assert.Contains("moving average", withEma.Out);
        var without = Mobius("sample", "--checkpoint", averaged, "--prompt", "a red heart moving left", "--steps", "2", "--no-ema", "--out", folder.File("b.gif"));
        Assert.True(without.Code == 0, without.Out + without.Err);
        Assert.DoesNotContain("moving average", without.Out);
        Assert.NotEqual(File.ReadAllBytes(folder.File("a.gif")), File.ReadAllBytes(folder.File("b.gif")));
        var ce = Mobius("compare", "--config", "micro", "--steps", "1", "--ema", "0.99", "--cosine-steps", "5", "--samples", "0", "--json", "--out", folder.File("cmpe"));
        Assert.True(ce.Code == 0, ce.Out + ce.Err);
        using (var doc = JsonDocument.Parse(ce.Out))
        {
            Assert.Equal(0.99, doc.RootElement.GetProperty("ema_decay").GetDouble(), 1e-6);
            Assert.Equal(5, doc.RootElement.GetProperty("cosine_decay_steps").GetInt32());
        }

        Assert.Contains("along a cosine to a tenth of it at step 5", File.ReadAllText(Path.Combine(folder.File("cmpe"), "report.md")));
        var cosineRun = Mobius("train", "--from", t2i, "--steps", "1", "--cosine-steps", "10", "--out", folder.File("cos.safetensors"));
        Assert.True(cosineRun.Code == 0, cosineRun.Out + cosineRun.Err);
        Assert.Equal(10, Checkpoint.Load(folder.File("cos.safetensors")).TrainOptions!.CosineDecaySteps);
        AssertCleanFailure(Mobius("train", "--from", t2i, "--cosine-steps", "-1", "--steps", "1", "--out", folder.File("x")), 2, "--cosine-steps must be 0");

        AssertCleanFailure(Mobius("compare", "--config", "micro", "--ema", "1", "--steps", "1", "--out", folder.File("x")), 2, "--ema must be a decay in [0, 1)");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--accumulate", "2", "--loop-correction", "4", "--steps", "1", "--out", folder.File("x")), 2,
            "--accumulate does not combine with --loop-correction");
    }

    [Fact]
    public void Ranks_pretrain_and_train_data_parallel_as_accumulation_does_on_the_cpu_and_cuda_resume_with_their_ranks_and_refuse_the_loop_correction()
    {
        using var folder = new TempFolder();
        string t2i = folder.File("t2i.safetensors"), dp = folder.File("dp.safetensors"), acc = folder.File("acc.safetensors");
        var pre = Mobius("pretrain", "--config", "micro", "--steps", "1", "--ranks", "2", "--out", t2i);
        Assert.True(pre.Code == 0, pre.Out + pre.Err);
        Assert.Contains("pretrain micro on 2 ranks", pre.Out);
        Assert.Equal(2, Checkpoint.Load(t2i).TrainOptions!.Ranks);

        var t = Mobius("train", "--from", t2i, "--batch", "1", "--ranks", "2", "--steps", "3", "--log", folder.File("dp.csv"), "--out", dp);
        Assert.True(t.Code == 0, t.Out + t.Err);
        Assert.Contains("rank 0's, each of the 2 ranks holds as much", Flat(t.Out));
        Assert.Contains("data parallel: 2 ranks on", Flat(t.Out));
        var a = Mobius("train", "--from", t2i, "--batch", "1", "--accumulate", "2", "--steps", "3", "--log", folder.File("acc.csv"), "--out", acc);
        Assert.True(a.Code == 0, a.Out + a.Err);
        static float[] Losses(string csv) => File.ReadAllLines(csv).Skip(1).Select(l => float.Parse(l.Split(',')[1], CultureInfo.InvariantCulture)).ToArray();
        var (dpLosses, accLosses) = (Losses(folder.File("dp.csv")), Losses(folder.File("acc.csv")));
        Assert.Equal(3, dpLosses.Length);
        Close.All(dpLosses, accLosses, 1e-7, 1e-4, "two ranks' losses against accumulating two batches");

        var resumed = Mobius("train", "--resume", dp, "--steps", "1", "--out", dp);
        Assert.True(resumed.Code == 0, resumed.Out + resumed.Err);
        Assert.Contains("on 2 ranks", resumed.Out);
        Assert.Equal((4, 2), (Checkpoint.Load(dp).Step, Checkpoint.Load(dp).TrainOptions!.Ranks));
        Assert.Contains("x 2 ranks", Flat(Mobius("info", "--checkpoint", dp).Out));

        AssertCleanFailure(Mobius("train", "--from", t2i, "--ranks", "0", "--steps", "1", "--out", folder.File("x")), 2, "--ranks must be at least 1");
        // On the cuda backend (the simulated driver here): ranks on devices round robin, the same averaging.
        var cuda = Run("sim", "train", "--from", t2i, "--batch", "1", "--ranks", "2", "--backend", "cuda", "--steps", "1", "--out", folder.File("cuda.safetensors"));
        Assert.True(cuda.Code == 0, cuda.Out + cuda.Err);
        Assert.Contains("data parallel: 2 ranks on simulated", Flat(cuda.Out));
        Assert.Contains("through host memory", Flat(cuda.Out)); // auto: NCCL needs a device per rank, the simulator has one
        Assert.Equal(2, Checkpoint.Load(folder.File("cuda.safetensors")).TrainOptions!.Ranks);
        var nccl = Run("sim", "train", "--from", t2i, "--batch", "1", "--ranks", "2", "--backend", "cuda", "--collectives", "nccl", "--steps", "1", "--out", folder.File("nccl.safetensors"));
        Assert.True(nccl.Code == 0, nccl.Out + nccl.Err);
        Assert.Contains("with nccl 2.", Flat(nccl.Out));
        AssertCleanFailure(Mobius("train", "--from", t2i, "--ranks", "2", "--collectives", "nccl", "--steps", "1", "--out", folder.File("x")), 2, "--collectives nccl reduces device memory");
        AssertCleanFailure(Mobius("train", "--from", t2i, "--ranks", "2", "--collectives", "mpi", "--steps", "1", "--out", folder.File("x")), 2, "--collectives must be auto, nccl or host");
        AssertCleanFailure(Mobius("train", "--from", t2i, "--ranks", "2", "--loop-correction", "4", "--steps", "1", "--out", folder.File("x")), 2,
            "--ranks does not combine with --loop-correction");
    }

    [Fact]
    public void Compare_and_demo_take_ranks_each_topology_data_parallel_as_accumulation_does_on_the_cpu_and_cuda()
    {
        using var folder = new TempFolder();
        string[] common = ["compare", "--config", "micro", "--steps", "2", "--samples", "0", "--validation-batches", "1", "--json"];
        var ranked = Mobius([.. common, "--ranks", "2", "--out", folder.File("ranks")]);
        var accumulated = Mobius([.. common, "--accumulate", "2", "--out", folder.File("acc")]);
        Assert.True(ranked.Code == 0, ranked.Out + ranked.Err);
        Assert.True(accumulated.Code == 0, accumulated.Out + accumulated.Err);
        using var r = JsonDocument.Parse(ranked.Out);
        using var a = JsonDocument.Parse(accumulated.Out);
        Assert.Equal((2, 1), (r.RootElement.GetProperty("ranks").GetInt32(), r.RootElement.GetProperty("accumulate").GetInt32()));
        Assert.Equal((1, 2), (a.RootElement.GetProperty("ranks").GetInt32(), a.RootElement.GetProperty("accumulate").GetInt32()));
        foreach (var topo in new[] { "serial", "parallel" })
        {
            foreach (var key in new[] { "final_loss", "validation_loss" })
            {
                double x = r.RootElement.GetProperty(topo).GetProperty(key).GetDouble(), y = a.RootElement.GetProperty(topo).GetProperty(key).GetDouble();
                Assert.True(Math.Abs(x - y) <= 1e-4 * Math.Abs(y), $"{topo} {key}: two ranks {x}, two accumulated batches {y}");
            }
        }

        Assert.Contains("data-parallel ranks per topology", Flat(File.ReadAllText(Path.Combine(folder.File("ranks"), "report.md"))));

        // The cuda backend (the simulated driver): both topologies' ranks share its one device, here through NCCL
        // (host memory, the default there, is the train command's test); the first step's losses are the cpu ranks'
        // to float32 reduction order.
        var cuda = Run("sim", [.. common.Select(x => x == "2" ? "1" : x), "--ranks", "2", "--backend", "cuda", "--collectives", "nccl", "--out", folder.File("cuda")]);
        Assert.True(cuda.Code == 0, cuda.Out + cuda.Err);
        using var c = JsonDocument.Parse(cuda.Out);
        Assert.Equal(2, c.RootElement.GetProperty("ranks").GetInt32());
        foreach (var topo in new[] { "serial", "parallel" })
        {
            double x = c.RootElement.GetProperty(topo).GetProperty("losses")[0].GetDouble(), y = r.RootElement.GetProperty(topo).GetProperty("losses")[0].GetDouble();
            Assert.True(Math.Abs(x - y) <= 1e-3 * Math.Abs(y), $"{topo} on cuda ranks with nccl {x} against the cpu's {y}");
        }

        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--ranks", "0", "--out", folder.File("x")), 2, "--ranks must be at least 1");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--ranks", "2", "--collectives", "nccl", "--out", folder.File("x")), 2, "--collectives nccl reduces device memory");
        AssertCleanFailure(Mobius("demo", "--steps", "1", "--ranks", "2", "--loop-correction", "4", "--out", folder.File("x")), 2, "--ranks does not combine with --loop-correction");
    }

    [Fact]
    public void A_dry_run_on_the_simulator_issues_the_very_calls_of_a_real_step_and_computes_none()
    {
        // MOBIUS_SIM_DRY=1 (how benchmarks/results/2026-11-28-host-overhead.md timed the host's own work): the same
        // calls, by name and count, as a step that computes, and computes none of them.
        using var folder = new TempFolder();
        string[] args = ["compare", "--config", "micro", "--backend", "cuda", "--steps", "1", "--samples", "0", "--validation-batches", "1", "--profile", "1", "--json"];
        var real = Run("sim", [.. args, "--out", folder.File("real")]);
        var dry = Run("sim", new Dictionary<string, string> { ["MOBIUS_SIM_DRY"] = "1" }, [.. args, "--out", folder.File("dry")]);
        Assert.True(real.Code == 0, real.Out + real.Err);
        Assert.True(dry.Code == 0, dry.Out + dry.Err);
        using var a = JsonDocument.Parse(real.Out);
        using var b = JsonDocument.Parse(dry.Out);
        foreach (var topo in new[] { "serial", "parallel" })
        {
            static SortedDictionary<string, double> Calls(JsonElement e) => new(e.GetProperty("calls_per_step").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble()), StringComparer.Ordinal);
            var (want, got) = (Calls(a.RootElement.GetProperty(topo)), Calls(b.RootElement.GetProperty(topo)));
            Assert.True(want.Count > 10, $"{topo}: the real step's calls were counted");
            Assert.Equal(want, got);
            // Nothing computed: the dry loss is whatever its buffer held, not the real step's.
            Assert.NotEqual(a.RootElement.GetProperty(topo).GetProperty("final_loss").GetDouble(), b.RootElement.GetProperty(topo).GetProperty("final_loss").GetDouble());
        }
    }

    [Fact]
    public void A_seed_makes_a_run_repeatable_across_processes()
    {
        using var folder = new TempFolder();
        string a = folder.File("a.safetensors"), b = folder.File("b.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "3", "--seed", "7", "--out", a).Code);
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "3", "--seed", "7", "--out", b).Code);
        var (ta, _) = global::Mobius.Engine.IO.SafeTensors.Read(a);
        var (tb, _) = global::Mobius.Engine.IO.SafeTensors.Read(b);
        Assert.Equal(ta.Keys.Order(), tb.Keys.Order());
        foreach (var (name, entry) in ta)
        {
            Assert.True(entry.Data.AsSpan().SequenceEqual(tb[name].Data), $"{name} differs between two runs with the same seed");
        }

        // The batch is part of the recipe: another one trains on other frames, and the checkpoint records it.
        string c = folder.File("c.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "3", "--seed", "7", "--batch", "3", "--out", c).Code);
        var (tc, _) = global::Mobius.Engine.IO.SafeTensors.Read(c);
        Assert.Contains(ta.Keys, name => !ta[name].Data.AsSpan().SequenceEqual(tc[name].Data));
        Assert.Equal(3, Checkpoint.Load(c).TrainOptions!.Batch);
        Assert.Equal(0, Checkpoint.Load(a).TrainOptions!.Batch);
    }

    [Fact]
    public void Bad_input_gives_one_clear_message_and_the_documented_exit_code()
    {
        using var folder = new TempFolder();
        AssertCleanFailure(Mobius("compare", "--stepz", "3"), 2, "--stepz");
        AssertCleanFailure(Mobius("compare", "--config", "huge", "--steps", "1"), 2, "unknown config 'huge'");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--lr", "-0.1"), 2, "--lr must be in (0, 1)");
        AssertCleanFailure(Mobius("train", "--topology", "diagonal", "--out", folder.File("x")), 2, "unknown topology");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--bridge", "tunnel"), 2, "unknown bridge 'tunnel'");
        AssertCleanFailure(Mobius("train", "--topology", "serial", "--min-snr", "-1", "--out", folder.File("x")), 2, "--min-snr must be 0 (off) or positive");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--frame-noise", "1.5"), 2, "--frame-noise must be in [0, 1)");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--sample-frame-noise", "1"), 2, "--sample-frame-noise must be in [0, 1)");
        AssertCleanFailure(Mobius("sample", "--prompt", "a red heart", "--sample-frame-noise", "-0.5"), 2, "--sample-frame-noise must be in [0, 1)");
        AssertCleanFailure(Mobius("demo", "--guidance", "-1", "--out", folder.Path), 2, "--guidance must be 0 or more");
        AssertCleanFailure(Mobius("sample", "--prompt", "a red heart", "--guidance", "NaN"), 2, "--guidance must be 0 or more");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--motion", "move-sideways"), 2, "unknown motion 'move-sideways'");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--profile", "-1"), 2, "--profile must be 0 or more");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--frontier", "-1"), 2, "--frontier must be 0 or more");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--threads", "-2"), 2, "--threads must be 0 (all cores) or more");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--memory-limit-mb", "-1"), 2, "--memory-limit-mb must be 0 (no limit) or more");
        AssertCleanFailure(Mobius("train", "--topology", "serial", "--batch", "0", "--out", folder.File("x")), 2, "--batch must be at least 1 clip");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--freeze", "down.9."), 2, "--freeze: 'down.9.' names no temporal layer");
        AssertCleanFailure(Mobius("sample", "--checkpoint", folder.File("nope.safetensors"), "--prompt", "a red heart"), 3, "nope.safetensors");

        string corrupt = folder.File("corrupt.safetensors");
        File.WriteAllText(corrupt, "this is not a checkpoint");
        AssertCleanFailure(Mobius("sample", "--checkpoint", corrupt, "--prompt", "a red heart"), 3, "corrupt.safetensors");

        string t2i = folder.File("t2i.safetensors");
        Assert.Equal(0, Mobius("pretrain", "--config", "micro", "--steps", "1", "--out", t2i).Code);
        AssertCleanFailure(Mobius("sample", "--checkpoint", t2i, "--prompt", "a purple zebra dancing"), 4, "zebra");
        var misspelt = AssertCleanFailure(Mobius("sample", "--checkpoint", t2i, "--prompt", "a purpel hart moves left."), 4,
            "purpel (did you mean \"purple\"?), hart (did you mean \"heart\"?), moves (did you mean \"moving\"?), \".\" (punctuation");
        Assert.Contains(Flat("The model knows 42 words: a, an, background, ball,"), misspelt);
        AssertCleanFailure(Mobius("sample", "--checkpoint", t2i, "--prompt", " "), 2, "--prompt is empty");
        AssertCleanFailure(Mobius("sample", "--checkpoint", t2i, "--prompt", string.Join(' ', Enumerable.Repeat("a red heart", 10))), 4, "Text has 30 words; the model's text encoder takes at most");
        AssertCleanFailure(Mobius("sample", "--checkpoint", t2i, "--prompt", "a red heart", "--out", folder.File("clip.png")), 2, "ending in .gif");
        AssertCleanFailure(Mobius("sample", "--checkpoint", t2i, "--prompt", "a red heart", "--out", folder.Path), 2, "ending in .gif");
        AssertCleanFailure(Mobius("train", "--from", t2i, "--steps", "1", "--out", folder.File("v"), "--memory-limit-mb", "1"), 5, "out of memory");
        AssertCleanFailure(Mobius("compare", "--config", "micro", "--steps", "1", "--backend", "cuda"), 6, "cuda");
        AssertCleanFailure(Mobius("train", "--topology", "parallel", "--resume", t2i, "--steps", "1", "--out", folder.File("v")), 2, "start stage 2 from it with --from");
    }
}
