using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>Serial's training time to the parallel topology's final validation loss, read off the two results.</summary>
public sealed class TimeToLossTests
{
    private static TopologyResult Result(double[] stepMs, (int Step, double Loss)[] curve, int? weightsStep = null) => new()
    {
        Memory = new Dictionary<string, long>(),
        SavedByKind = new Dictionary<string, long>(),
        Losses = stepMs.Select(_ => 0.1).ToList(),
        StepMs = stepMs,
        SampleScores = [],
        InitialValidationLoss = curve[0].Loss,
        ValidationCurve = curve.Select(c => new ValidationPoint(c.Step, c.Loss)).ToList(),
        ValidationLoss = curve.First(c => c.Step == (weightsStep ?? curve[^1].Step)).Loss,
        WeightsStep = weightsStep ?? curve[^1].Step,
    };

    private static double[] Times(Rng rng, int steps) => rng.Uniform(steps, 50f).Select(v => 200.0 + v).ToArray();

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Serial_time_runs_to_its_first_validation_at_or_below_the_parallel_loss(int seed)
    {
        var rng = new Rng(seed);
        double[] st = Times(rng, 6), pt = Times(rng, 6);
        var serial = Result(st, [(0, 1.0), (2, 0.8), (4, 0.6), (6, 0.5)]);
        var parallel = Result(pt, [(0, 1.0), (2, 0.9), (4, 0.7), (6, 0.65)]);

        var t = TimeToLoss.Of(serial, parallel);

        Assert.Equal(0.65, t.Loss);
        Assert.Equal(4, t.SerialStep);
        Assert.Equal(st[0] + st[1] + st[2] + st[3], t.SerialMs!.Value, 1e-9);
        Assert.Equal(6, t.ParallelStep);
        Assert.Equal(pt.Sum(), t.ParallelMs, 1e-9);
        Assert.Equal(t.ParallelMs / t.SerialMs.Value, t.Ratio!.Value, 1e-12);

        // A tie counts as reached.
        Assert.Equal(4, TimeToLoss.Of(serial, Result(pt, [(0, 1.0), (6, 0.6)])).SerialStep);
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Early_stopping_counts_the_parallel_time_to_its_kept_weights_only(int seed)
    {
        var rng = new Rng(seed);
        double[] st = Times(rng, 6), pt = Times(rng, 6);
        var serial = Result(st, [(0, 1.0), (2, 0.8), (4, 0.6), (6, 0.5)]);
        var parallel = Result(pt, [(0, 1.0), (2, 0.75), (4, 0.8), (6, 0.9)], weightsStep: 2);

        var t = TimeToLoss.Of(serial, parallel);

        Assert.Equal((0.75, 2, 4), (t.Loss, t.ParallelStep, t.SerialStep!.Value));
        Assert.Equal(pt[0] + pt[1], t.ParallelMs, 1e-9);
    }

    [Fact]
    public void No_serial_step_where_the_parallel_topology_is_ahead_or_never_beat_the_untrained_model()
    {
        var rng = new Rng(Seeds.One);
        double[] st = Times(rng, 4), pt = Times(rng, 4);
        var serial = Result(st, [(0, 1.0), (2, 0.8), (4, 0.7)]);

        var ahead = TimeToLoss.Of(serial, Result(pt, [(0, 1.0), (2, 0.7), (4, 0.6)]));
        Assert.Null(ahead.SerialStep);
        Assert.Null(ahead.SerialMs);
        Assert.Null(ahead.Ratio);
        Assert.Equal(pt.Sum(), ahead.ParallelMs, 1e-9);

        // Worse than untrained: serial's step 0 would "reach" it, but that is no training at all.
        var worse = TimeToLoss.Of(serial, Result(pt, [(0, 1.0), (4, 1.1)]));
        Assert.Null(worse.SerialStep);
        Assert.Null(worse.Ratio);
    }
}
