using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Mobius.Data;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Cli;

/// <summary>Runs the mobius command as a user does: a separate process. The CLI tests are split over several
/// classes so that the test runner can run them side by side.</summary>
public abstract class CliTestBase
{
    protected static (int Code, string Out, string Err) Mobius(params string[] args) => Run("", args);

    protected static (int Code, string Out, string Err) Run(string cudaMode, params string[] args) => Run(cudaMode, null, args);

    protected static (int Code, string Out, string Err) Run(string cudaMode, IReadOnlyDictionary<string, string>? environment, params string[] args)
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
    protected static string Flat(string text) => System.Text.RegularExpressions.Regex.Replace(text, @"\s+", " ");

    /// <summary>Asserts the exit code, the message and no stack trace; returns the output, its line wrapping undone.</summary>
    protected static string AssertCleanFailure((int Code, string Out, string Err) r, int code, string mention)
    {
        Assert.True(r.Code == code, $"exit {r.Code}, expected {code}:\n{r.Out}\n{r.Err}");
        string all = r.Out + r.Err;
        Assert.Contains(Flat(mention), Flat(all));
        Assert.DoesNotContain("   at ", all);
        return Flat(all);
    }

    /// <summary>Runs mobius until a line of its output contains <paramref name="marker"/>, then sends it SIGTERM; its exit code and the rest of its output.</summary>
    protected static async Task<(int Code, string Output)> Interrupted(string marker, params string[] args)
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
}

/// <summary>The mobius command end to end on the micro config, as a user runs it (a separate process): info, bad input, repeatability, interruption and resumed options.</summary>
public sealed class CliTests : CliTestBase
{
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
