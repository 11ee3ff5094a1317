using System.Globalization;
using System.Text.Json;
using Mobius.Data;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Cli;

/// <summary>pretrain, train, sample and the options of a training run (accumulation, EMA, ranks, GIF folders) end to end, as a user runs them (a separate process).</summary>
public sealed class CliTrainingTests : CliTestBase
{
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
}
