using Mobius.Data;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>
/// Trainer.PrefetchBatches: each step starts making the next step's batches on a worker thread. Made on the CPU
/// backend here (where it is off by default) to check that it changes nothing: the same losses to the bit, a
/// failure to make a batch raised at the step that needs it, and nothing left running after disposal.
/// </summary>
public sealed class PrefetchTests
{
    private static ModelConfig Micro => ModelConfig.Get("micro");

    private static (float[] Losses, int Clips) Losses(bool prefetch, int accumulate, int steps)
    {
        using var backend = new CpuBackend();
        int seed = Seeds.One * 23 + accumulate;
        using var model = TextToVideo.Create(backend, Micro, Topology.Parallel, seed);
        var data = new Counted(Comparison.Data(Micro, seed, Split.Train));
        float[] losses;
        using (var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f, Accumulate = accumulate }))
        {
            Assert.False(trainer.PrefetchBatches, "off by default on the CPU backend");
            trainer.PrefetchBatches = prefetch;
            losses = Enumerable.Range(0, steps).Select(_ => trainer.TrainStep().Loss).ToArray();
        }

        return (losses, data.Served); // after disposal: any batch still being made is made
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Prefetched_batches_train_exactly_as_batches_made_in_the_step(int accumulate)
    {
        const int steps = 3;
        var made = Losses(prefetch: false, accumulate, steps);
        var prefetched = Losses(prefetch: true, accumulate, steps);
        Assert.Equal(made.Losses, prefetched.Losses);
        Assert.True(made.Losses.Distinct().Count() == steps, "different batches each step");

        // Every batch made once: each step's own, and with prefetching one more step's, made while the last step ran.
        int perStep = Micro.Batch * accumulate;
        Assert.Equal(steps * perStep, made.Clips);
        Assert.Equal((steps + 1) * perStep, prefetched.Clips);
    }

    [Fact]
    public void A_batch_that_cannot_be_made_fails_its_own_step_with_its_own_message()
    {
        using var backend = new CpuBackend();
        int seed = Seeds.One * 23 + 5;
        using var model = TextToVideo.Create(backend, Micro, Topology.Serial, seed);
        var data = new BreaksAfter(Comparison.Data(Micro, seed, Split.Train), Micro.Batch);
        using var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f }) { PrefetchBatches = true };

        trainer.TrainStep(); // its clips are the first ones; the next step's, being made meanwhile, are not there
        var e = Assert.Throws<InvalidDataException>(() => trainer.TrainStep());
        Assert.Equal(BreaksAfter.Message, e.Message);
        Assert.Equal(1, trainer.StepsDone);
    }

    [Fact]
    public async Task Disposing_waits_for_a_batch_still_being_made()
    {
        var ct = TestContext.Current.CancellationToken;
        using var backend = new CpuBackend();
        int seed = Seeds.One * 23 + 7;
        using var model = TextToVideo.Create(backend, Micro, Topology.Parallel, seed);
        var data = new Gated(Comparison.Data(Micro, seed, Split.Train), Micro.Batch);
        var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f }) { PrefetchBatches = true };
        trainer.TrainStep();
        Assert.True(SpinWait.SpinUntil(() => data.Waiting > 0, TimeSpan.FromSeconds(30)), "the next step's batch is being made");
        var disposing = Task.Run(trainer.Dispose, ct);
        Assert.NotSame(disposing, await Task.WhenAny(disposing, Task.Delay(200, ct))); // disposal waits for the batch being made
        data.Open();
        await disposing.WaitAsync(TimeSpan.FromSeconds(30), ct);
        Assert.Equal(0, data.Waiting);
    }

    /// <summary>Counts the clips asked for.</summary>
    private sealed class Counted(IClipSource inner) : Wrapper(inner)
    {
        private int _served;

        public int Served => Volatile.Read(ref _served);

        public override Clip Get(int index)
        {
            Interlocked.Increment(ref _served);
            return Inner.Get(index);
        }
    }

    /// <summary>Gives the first <c>good</c> clips asked for, then fails.</summary>
    private sealed class BreaksAfter(IClipSource inner, int good) : Wrapper(inner)
    {
        public const string Message = "clip 17 of the folder is damaged";
        private int _served;

        public override Clip Get(int index) =>
            Interlocked.Increment(ref _served) <= good ? Inner.Get(index) : throw new InvalidDataException(Message);
    }

    /// <summary>Gives the first <c>free</c> clips at once; later calls wait until <see cref="Open"/>.</summary>
    private sealed class Gated(IClipSource inner, int free) : Wrapper(inner)
    {
        private readonly ManualResetEventSlim _gate = new(false);
        private int _served;
        private int _waiting;

        public int Waiting => Volatile.Read(ref _waiting);

        public void Open() => _gate.Set();

        public override Clip Get(int index)
        {
            if (Interlocked.Increment(ref _served) > free)
            {
                Interlocked.Increment(ref _waiting);
                try
                {
                    _gate.Wait();
                }
                finally
                {
                    Interlocked.Decrement(ref _waiting);
                }
            }

            return Inner.Get(index);
        }
    }

    /// <summary>Another source's clips, with <see cref="Get"/> to override.</summary>
    private abstract class Wrapper(IClipSource inner) : IClipSource
    {
        protected IClipSource Inner => inner;

        public int Count => inner.Count;

        public int FrameCount => inner.FrameCount;

        public int Height => inner.Height;

        public int Width => inner.Width;

        public abstract Clip Get(int index);
    }
}
