using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;
using Mobius.Engine.Optim;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>Modules (names, freezing, state dicts) and AdamW against a reference implementation.</summary>
public abstract class ModuleAndOptimizerTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private sealed class TwoLayers : Module
    {
        public TwoLayers(IBackend b, Random rng)
            : base(b)
        {
            First = AddModule("first", new Linear(b, rng, 3, 4));
            Norm = AddModule("norm", new LayerNorm(b, 4));
            Second = AddModule("second", new Linear(b, rng, 4, 2, bias: false));
        }

        public Linear First { get; }

        public LayerNorm Norm { get; }

        public Linear Second { get; }

        public Tensor Forward(Tensor x)
        {
            using var h = First.Forward(x);
            using var n = Norm.Forward(h);
            return Second.Forward(n);
        }
    }

    [Fact]
    public void Parameters_have_dotted_names_and_state_dicts_round_trip()
    {
        using var m = new TwoLayers(B, new Random(Seeds.One));
        Assert.Equal(["first.weight", "first.bias", "norm.weight", "norm.bias", "second.weight"], m.NamedParameters().Select(n => n.Name));
        Assert.Equal(12 + 4 + 4 + 4 + 8, m.ParameterCount());
        m.Second.Freeze();
        Assert.Equal(12 + 4 + 4 + 4, m.ParameterCount(trainableOnly: true));

        var state = m.StateDict();
        using var other = new TwoLayers(B, new Random(Seeds.One + 1));
        Assert.NotEqual(state["first.weight"], other.StateDict()["first.weight"]);
        other.LoadStateDict(state);
        foreach (var (k, v) in other.StateDict())
        {
            Assert.Equal(state[k], v);
        }
    }

    [Fact]
    public void Loading_a_mismatched_state_dict_names_what_is_wrong()
    {
        using var m = new TwoLayers(B, new Random(Seeds.One));
        var state = m.StateDict();
        state.Remove("norm.bias");
        state["extra.weight"] = [1f];
        var e = Assert.Throws<InvalidDataException>(() => m.LoadStateDict(state));
        Assert.Contains("norm.bias", e.Message);
        Assert.Contains("extra.weight", e.Message);

        var wrong = m.StateDict();
        wrong["first.bias"] = new float[5];
        Assert.Contains("first.bias", Assert.Throws<InvalidDataException>(() => m.LoadStateDict(wrong)).Message);

        // Non-strict loading takes what matches.
        Assert.Equal(4, m.LoadStateDict(state, strict: false).Count);
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void AdamW_matches_a_reference_implementation_with_clipping(int seed)
    {
        var r = new Rng(seed);
        using var tape = Tape.Begin();
        using var m = new TwoLayers(B, new Random(seed));
        var named = m.NamedParameters().ToList();
        var reference = named.ToDictionary(n => n.Name, n => n.Parameter.ToArray().Select(v => (double)v).ToArray());
        var mom = named.ToDictionary(n => n.Name, n => (M: new double[n.Parameter.Numel], V: new double[n.Parameter.Numel]));
        const float lr = 0.05f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, wd = 0.1f, maxNorm = 0.5f;
        using var opt = new AdamW(named, lr, b1, b2, eps, wd);

        for (int step = 1; step <= 3; step++)
        {
            using var x = Tensor.FromArray(B, r.Uniform(5 * 3), new Shape(5, 3));
            using (var y = m.Forward(x))
            using (var loss = Ops.Sum(y))
            {
                loss.Backward();
            }

            var grads = named.ToDictionary(n => n.Name, n => n.Parameter.Grad!.ToArray().Select(v => (double)v).ToArray());
            double norm = Math.Sqrt(grads.Values.Sum(g => g.Sum(v => v * v)));
            double scale = norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
            float reported = opt.Step(maxNorm);
            Assert.True(Math.Abs(reported - norm) <= 1e-4 * norm, $"norm {reported} vs {norm} ({r})");

            foreach (var (name, p) in reference)
            {
                var (mm, vv) = mom[name];
                for (int i = 0; i < p.Length; i++)
                {
                    double g = grads[name][i] * scale;
                    mm[i] = b1 * mm[i] + (1 - b1) * g;
                    vv[i] = b2 * vv[i] + (1 - b2) * g * g;
                    double mhat = mm[i] / (1 - Math.Pow(b1, step));
                    double vhat = vv[i] / (1 - Math.Pow(b2, step));
                    p[i] = p[i] * (1 - lr * wd) - lr * mhat / (Math.Sqrt(vhat) + eps);
                }
            }

            // fp32 state against fp64: updates are lr-sized, errors stay around 1e-6.
            foreach (var (name, p) in named)
            {
                Close.All(p.ToArray(), reference[name], 2e-5, 1e-4, $"{name} after step {step} ({r})");
                Assert.Null(p.Grad);
            }
        }

        Assert.Equal(3, opt.StepCount);
        Assert.Equal(2 * m.ParameterCount() * 4, B.Memory.Current(MemoryCategory.OptimizerState));
    }

    [Fact]
    public void AdamW_ignores_frozen_parameters()
    {
        using var m = new TwoLayers(B, new Random(Seeds.One));
        m.First.Freeze();
        using var opt = new AdamW(m.NamedParameters());
        Assert.DoesNotContain(opt.Parameters, p => p.Name.StartsWith("first.", StringComparison.Ordinal));
        m.Freeze();
        Assert.Throws<ArgumentException>(() => new AdamW(m.NamedParameters()));
    }
}

public sealed class CpuModuleAndOptimizerTests(CpuFixture f) : ModuleAndOptimizerTests(f), IClassFixture<CpuFixture>;
public sealed class CudaModuleAndOptimizerTests(CudaFixture f) : ModuleAndOptimizerTests(f), IClassFixture<CudaFixture>;
