using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>Both topologies at every recompute policy, measured (<see cref="Frontier"/>).</summary>
public sealed class FrontierTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void The_frontier_measures_every_case_with_the_planned_memory(bool together)
    {
        var config = ModelConfig.Get("micro");
        var options = new TrainOptions { Seed = 6, LearningRate = 1e-3f };
        var rounds = new List<(int Done, int Total)>();
        var points = Frontier.Measure(config, () => new CpuBackend(1), options, steps: 2, warmup: 1, together, new InlineProgress<(int, int)>(rounds.Add));

        Assert.Equal(8, points.Count);
        Assert.Equal(["none", "temporal", "spatial", "spatial+temporal"], Frontier.Pairs(points).Select(p => p.Recompute));
        Assert.All(Frontier.Pairs(points), p => Assert.Equal((Topology.Serial, Topology.Parallel), (p.Serial.Topology, p.Parallel.Topology)));
        Assert.Equal(together ? 3 : 12, rounds.Count);  // a round per step; one rotation, or one per policy
        Assert.Equal(rounds.Count, rounds[^1].Done);
        foreach (var planned in MemoryPlan.OperatingPoints(config, options))
        {
            var serial = Assert.Single(points, p => p.Recompute == planned.Recompute && p.Topology == Topology.Serial);
            var parallel = Assert.Single(points, p => p.Recompute == planned.Recompute && p.Topology == Topology.Parallel);
            Assert.Equal((planned.Serial.PeakBytes, planned.Serial.SavedActivationBytes), (serial.PeakBytes, serial.SavedActivationBytes));
            Assert.Equal((planned.Parallel.PeakBytes, planned.Parallel.SavedActivationBytes), (parallel.PeakBytes, parallel.SavedActivationBytes));
            Assert.True(serial.StepMsMedian > 0 && parallel.StepMsMedian > 0);
        }
    }

    [Fact]
    public void The_summary_pairs_each_topology_at_its_own_best_and_counts_the_serial_policies_beaten()
    {
        FrontierPoint P(string policy, Topology t, double ms, long peakMib) => new(policy, t, ms, peakMib << 20, peakMib << 19);
        var points = new[]
        {
            P("none", Topology.Serial, 100, 1000), P("temporal", Topology.Serial, 120, 600), P("spatial", Topology.Serial, 130, 500),
            P("none", Topology.Parallel, 80, 700), P("temporal", Topology.Parallel, 125, 550),
        };

        // serial none: beaten by parallel none (80 < 100, 700 < 1000); serial temporal: parallel temporal is
        // leaner but slower (125 > 120), parallel none faster but not leaner (700 > 600); serial spatial: nothing leaner.
        Assert.Equal(["none"], Frontier.Beaten(points));
        Assert.Equal(["none", "temporal"], Frontier.Pairs(points).Select(p => p.Recompute));  // serial's spatial has no parallel twin
        string summary = Frontier.Summary(points);
        Assert.Contains("Fastest against fastest: 80.0 ms (none) against 100.0 ms (none), 0.800.", summary);
        Assert.Contains("550.0 MiB at 125.0 ms (temporal) against 500.0 MiB at 130.0 ms (spatial)", summary);
        Assert.Contains("peak 1.100", summary);  // parallel's leanest (550) against serial's leanest (500)
        Assert.Contains("1 of 3 (none)", summary);
        Assert.Throws<ArgumentException>(() => Frontier.Summary(points.Where(p => p.Topology == Topology.Serial).ToList()));
    }
}
