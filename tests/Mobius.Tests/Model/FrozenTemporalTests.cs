using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>Stage 2 with some temporal layers kept frozen (TrainOptions.FrozenTemporal, `--freeze`), on the CPU.</summary>
public sealed class FrozenTemporalTests
{
    private static ModelConfig Micro => ModelConfig.Get("micro");

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void Frozen_temporal_layers_keep_their_values_and_the_others_train(Topology topology)
    {
        using var backend = new CpuBackend();
        int seed = Seeds.One;
        using var model = TextToVideo.Create(backend, Micro, topology, seed);
        var all = model.Unet.TemporalParameters().ToList();
        string[] frozen = ["down.1.", "mid."];
        var before = all.ToDictionary(t => t.Name, t => t.Parameter.ToArray());
        var data = Comparison.Data(Micro, seed, Split.Train);
        using var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f, FrozenTemporal = frozen });

        long frozenCount = all.Where(t => frozen.Any(t.Name.StartsWith)).Sum(t => t.Parameter.Numel);
        Assert.InRange(frozenCount, 1, all.Sum(t => t.Parameter.Numel) - 1);
        Assert.Equal(all.Sum(t => t.Parameter.Numel) - frozenCount, trainer.TrainableParameters);

        for (int i = 0; i < 3; i++)
        {
            trainer.TrainStep();
        }

        int changed = 0;
        foreach (var (name, p) in all)
        {
            var now = p.ToArray();
            if (frozen.Any(name.StartsWith))
            {
                Assert.True(p.Frozen, name);
                Assert.Null(p.Grad);
                Assert.True(before[name].AsSpan().SequenceEqual(now), $"{name} changed while frozen");
            }
            else if (!before[name].AsSpan().SequenceEqual(now))
            {
                changed++;
            }
        }

        Assert.True(changed > 0, "no trainable temporal parameter moved");
    }

    [Fact]
    public void Prefixes_that_name_no_temporal_layer_or_leave_nothing_to_train_are_refused()
    {
        using var backend = new CpuBackend();
        using var model = TextToVideo.Create(backend, Micro, Topology.Parallel, 1);
        var data = Comparison.Data(Micro, 1, Split.Train);
        var e = Assert.Throws<ArgumentException>(() => new Trainer(model, data, Stage.TextToVideo, new TrainOptions { FrozenTemporal = ["down.9."] }));
        Assert.Contains("'down.9.' names no temporal layer", e.Message);
        Assert.Contains("down.0.", e.Message);
        Assert.Contains("nothing", Assert.Throws<ArgumentException>(() =>
            new Trainer(model, data, Stage.TextToVideo, new TrainOptions { FrozenTemporal = ["down.", "mid.", "up."] })).Message.Replace("no temporal layer to train", "nothing"));
        Assert.Throws<ArgumentException>(() => new Trainer(model, data, Stage.TextToImage, new TrainOptions { FrozenTemporal = ["down.0."] }));
    }
}
