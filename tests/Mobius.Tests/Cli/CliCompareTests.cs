using System.Globalization;
using System.Text.Json;
using Mobius.Data;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Cli;

/// <summary><c>mobius compare</c> and <c>mobius plan</c> end to end on the micro config, as a user runs them (a separate process).</summary>
public sealed class CliCompareTests : CliTestBase
{
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
}
