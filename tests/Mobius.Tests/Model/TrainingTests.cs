using Mobius.Data;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>Training end to end on the micro config: learning, checkpoints, exact resume.</summary>
public abstract class TrainingTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private static ModelConfig Micro => ModelConfig.Get("micro");

    private static EmojiClips Clips(int seed, Split split = Split.Train) => Comparison.Data(Micro, seed, split);

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void A_few_steps_lower_the_loss(Topology topology)
    {
        int seed = Seeds.One;
        using var t2i = TextToVideo.Create(B, Micro, Topology.Spatial, seed);
        using var model = TextToVideo.Create(B, Micro, topology, seed);
        model.Unet.LoadStateDict(t2i.Unet.StateDict(), strict: false);
        model.Text.LoadStateDict(t2i.Text.StateDict());
        var data = Clips(seed);
        using var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 2e-3f, CaptionDropout = 0 });

        // The same fixed batches before and after: a learning model lowers their loss.
        float before = trainer.Evaluate(data, 3, seed);
        for (int i = 0; i < 25; i++)
        {
            var s = trainer.TrainStep();
            Assert.True(float.IsFinite(s.Loss), $"step {s.Step} loss {s.Loss} (seed {seed})");
        }

        float after = trainer.Evaluate(data, 3, seed);
        Assert.True(after < before * 0.97, $"{topology}: loss {before:0.0000} -> {after:0.0000} after 25 steps (seed {seed})");
        Assert.All(model.Unet.SpatialParameters(), p => Assert.Null(p.Parameter.Grad));
    }

    [Fact]
    public void Resuming_from_a_checkpoint_continues_exactly()
    {
        int seed = Seeds.One;
        using var folder = new TempFolder();
        var data = Clips(seed);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-3f };

        float[] Straight(int steps, out Dictionary<string, float[]> weights)
        {
            using var m = TextToVideo.Create(B, Micro, Topology.Parallel, seed);
            using var t = new Trainer(m, data, Stage.TextToVideo, options);
            var losses = Enumerable.Range(0, steps).Select(_ => t.TrainStep().Loss).ToArray();
            weights = m.Unet.StateDict();
            return losses;
        }

        var all = Straight(4, out var expected);

        string path = folder.File("half.safetensors");
        float[] firstHalf;
        using (var m = TextToVideo.Create(B, Micro, Topology.Parallel, seed))
        using (var t = new Trainer(m, data, Stage.TextToVideo, options))
        {
            firstHalf = [t.TrainStep().Loss, t.TrainStep().Loss];
            t.Save(path);
        }

        var ckpt = Checkpoint.Load(path);
        Assert.Equal(2, ckpt.Step);
        Assert.Equal(Topology.Parallel, ckpt.Topology);
        using var resumed = TextToVideo.Load(B, ckpt, Topology.Parallel, seed);
        using var trainer = new Trainer(resumed, data, Stage.TextToVideo, options);
        trainer.Resume(ckpt);
        var secondHalf = new[] { trainer.TrainStep().Loss, trainer.TrainStep().Loss };
        Assert.Equal(all, firstHalf.Concat(secondHalf).ToArray());
        var got = resumed.Unet.StateDict();
        foreach (var (name, values) in expected)
        {
            Assert.True(values.AsSpan().SequenceEqual(got[name]), $"{name} differs after resume");
        }
    }

    [Fact]
    public void A_text_to_image_checkpoint_loads_into_both_topologies_and_a_video_one_only_into_its_own()
    {
        int seed = Seeds.One;
        using var folder = new TempFolder();
        string t2iPath = folder.File("t2i.safetensors");
        using (var t2i = TextToVideo.Create(B, Micro, Topology.Spatial, seed))
        {
            t2i.Save(t2iPath, step: 7, seed);
        }

        var ckpt = Checkpoint.Load(t2iPath);
        Assert.Equal(7, ckpt.Step);
        using (var serial = TextToVideo.Load(B, ckpt, Topology.Serial, seed))
        using (var parallel = TextToVideo.Load(B, ckpt, Topology.Parallel, seed))
        {
            foreach (var (name, values) in ckpt.Unet)
            {
                Assert.Equal(values, serial.Unet.StateDict()[name]);
                Assert.Equal(values, parallel.Unet.StateDict()[name]);
            }

            string serialPath = folder.File("serial.safetensors");
            serial.Save(serialPath, 1, seed);
            var e = Assert.Throws<InvalidDataException>(() => TextToVideo.Load(B, Checkpoint.Load(serialPath), Topology.Parallel, seed));
            Assert.Contains("Serial", e.Message);
        }
    }

    [Fact]
    public void Damaged_checkpoints_are_rejected_with_the_file_named()
    {
        using var folder = new TempFolder();
        string path = folder.File("bad.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Throws<FileNotFoundException>(() => Checkpoint.Load(folder.File("missing.safetensors")));

        // Truncating a good checkpoint is caught too.
        string good = folder.File("good.safetensors");
        using (var m = TextToVideo.Create(B, Micro, Topology.Spatial, 1))
        {
            m.Save(good, 0, 1);
        }

        var bytes = File.ReadAllBytes(good);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        Assert.Contains(path, Assert.Throws<InvalidDataException>(() => Checkpoint.Load(path)).Message);
    }

    [Fact]
    public void Sampling_gives_clips_in_range_and_is_repeatable()
    {
        using var m = TextToVideo.Create(B, Micro, Topology.Parallel, Seeds.One);
        var prompt = Clips(1).Get(0).Caption;
        var a = m.Generate([prompt], steps: 3, seed: 5);
        var b = m.Generate([prompt], steps: 3, seed: 5);
        Assert.Equal(Micro.Frames * 3 * Micro.Height * Micro.Width, a.Length);
        Assert.All(a, v => Assert.InRange(v, -1f, 1f));
        Assert.Equal(a, b);
        Assert.Throws<UnknownWordsException>(() => m.Generate(["a purple zebra"], steps: 1));
    }
}

public sealed class CpuTrainingTests(CpuFixture f) : TrainingTests(f), IClassFixture<CpuFixture>;
public sealed class CudaTrainingTests(CudaFixture f) : TrainingTests(f), IClassFixture<CudaFixture>;
