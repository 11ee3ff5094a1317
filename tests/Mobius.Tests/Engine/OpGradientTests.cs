using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// Every differentiable op: forward against the fp64 reference loops, gradients against fp64 central
/// differences of the same reference, on small random shapes (odd sizes included) and fresh seeds.
/// Tolerances: forward atol 1e-5 + rtol 1e-4 unless a comment says otherwise (fp32 sums of at most a
/// few hundred O(1) terms stay well inside); gradients atol 1e-4 + rtol 1e-3 (fp32 backward sums of
/// products, compared with differences of an fp64 function).
/// </summary>
public abstract class OpGradientTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Linear(int seed)
    {
        var r = new Rng(seed);
        int rows = r.Int(1, 7), inF = r.Int(1, 9), outF = r.Int(1, 9);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "linear",
            Inputs = [new Shape(rows, inF), new Shape(outF, inF), new Shape(outF)],
            Op = t => Ops.Linear(t[0], t[1], t[2]),
            Reference = d => Reference.Linear(d[0], d[1], d[2], rows, inF, outF),
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void MatMul_all_transpositions_and_batches(int seed)
    {
        var r = new Rng(seed);
        foreach (bool ta in new[] { false, true })
        {
            foreach (bool tb in new[] { false, true })
            {
                int batch = r.Int(1, 3), m = r.Int(1, 6), n = r.Int(1, 6), k = r.Int(1, 6);
                Shape Sh(int rows, int cols) => batch == 1 ? new Shape(rows, cols) : new Shape(batch, rows, cols);
                OpCheck.Run(B, r, new OpCase
                {
                    Name = $"matmul transA={ta} transB={tb} batch={batch}",
                    Inputs = [ta ? Sh(k, m) : Sh(m, k), tb ? Sh(n, k) : Sh(k, n)],
                    Op = t => Ops.MatMul(t[0], t[1], ta, tb),
                    Reference = d => Reference.MatMul(d[0], d[1], batch, m, n, k, ta, tb),
                });
            }
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void MatMul_with_shared_right_operand(int seed)
    {
        var r = new Rng(seed);
        int batch = r.Int(2, 3), m = r.Int(1, 5), n = r.Int(1, 5), k = r.Int(1, 5);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "matmul shared b",
            Inputs = [new Shape(batch, m, k), new Shape(k, n)],
            Op = t => Ops.MatMul(t[0], t[1]),
            Reference = d => Reference.MatMul(d[0], d[1], 1, batch * m, n, k, false, false),
        });
    }

    [Theory]
    [InlineData(3, 1, 1)]
    [InlineData(3, 2, 1)]
    [InlineData(1, 1, 0)]
    [InlineData(1, 2, 0)]
    public void Conv2d(int kernel, int stride, int pad)
    {
        var r = new Rng(Seeds.One + kernel * 10 + stride);
        int n = r.Int(1, 2), cin = r.Int(1, 3), cout = r.Int(1, 3), h = r.Int(3, 6), w = r.Int(3, 7);
        OpCheck.Run(B, r, new OpCase
        {
            Name = $"conv2d k{kernel} s{stride} p{pad}",
            Inputs = [new Shape(n, cin, h, w), new Shape(cout, cin, kernel, kernel), new Shape(cout)],
            Op = t => Ops.Conv2d(t[0], t[1], t[2], stride, pad),
            Reference = d => Reference.Conv2d(d[0], d[1], d[2], n, cin, h, w, cout, kernel, stride, pad),
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void TemporalConv(int seed)
    {
        var r = new Rng(seed);
        int b = r.Int(1, 2), f = r.Pick(1, 2, 3, 5), cin = r.Int(1, 4), cout = r.Int(1, 4), h = r.Int(1, 3), w = r.Int(1, 3);
        OpCheck.Run(B, r, TemporalConvCase($"temporal_conv F={f}", b, f, cin, cout, h, w));
    }

    /// <summary>The temporal convolution of x [b*f, cin, h, w] against the fp64 reference (shared with the CUDA tile tests).</summary>
    internal static OpCase TemporalConvCase(string name, int b, int f, int cin, int cout, int h, int w) => new()
    {
        Name = name,
        Inputs = [new Shape(b * f, cin, h, w), new Shape(cout, cin, 3), new Shape(cout)],
        Op = t => Ops.TemporalConv(t[0], t[1], t[2], f),
        Reference = d => Reference.TemporalConv(d[0], d[1], d[2], b, f, cin, cout, h * w),
    };

    [Theory]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(3, false)]
    [InlineData(3, true)]
    public void GroupNorm(int frames, bool silu)
    {
        var r = new Rng(Seeds.One + frames * 2 + (silu ? 1 : 0));
        int n = r.Int(1, 2), groups = r.Int(1, 3), c = groups * r.Int(1, 3), h = r.Int(1, 3), w = r.Int(2, 3);

        OpCheck.Run(B, r, GroupNormCase($"group_norm T={frames} silu={silu}", n, frames, c, h, w, groups, silu));
    }

    /// <summary>
    /// Group norm of x [n*frames, c, h, w] against the fp64 reference (shared with the CUDA chunk tests). Gradients
    /// of a normalisation divide by small variances of few elements: rtol 2e-3.
    /// </summary>
    internal static OpCase GroupNormCase(string name, int n, int frames, int c, int h, int w, int groups, bool silu) => new()
    {
        Name = name,
        Inputs = [new Shape(n * frames, c, h, w), new Shape(c), new Shape(c)],
        Op = t => Ops.GroupNorm(t[0], t[1], t[2], groups, frames, silu),
        Reference = d => Reference.GroupNorm(d[0], d[1], d[2], n, frames, c, h * w, groups, 1e-5, silu),
        GradRtol = 2e-3,
    };

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void LayerNorm(int seed)
    {
        var r = new Rng(seed);
        int rows = r.Int(1, 5), cols = r.Int(2, 9);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "layer_norm",
            Inputs = [new Shape(rows, cols), new Shape(cols), new Shape(cols)],
            Op = t => Ops.LayerNorm(t[0], t[1], t[2]),
            Reference = d => Reference.LayerNorm(d[0], d[1], d[2], rows, cols, 1e-5),
            GradRtol = 2e-3,
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Activations(int seed)
    {
        var r = new Rng(seed);
        var shape = new Shape(r.Int(1, 4), r.Int(1, 40));

        // Inputs in [-4, 4] cover both tails of the nonlinearity.
        Func<Rng, int, Shape, float[]> wide = (rr, _, s) => rr.Uniform(s.Numel, 4f);
        OpCheck.Run(B, r, new OpCase { Name = "silu", Inputs = [shape], Op = t => Ops.Silu(t[0]), Reference = d => Reference.Map(d[0], Reference.Silu), Init = wide });
        OpCheck.Run(B, r, new OpCase { Name = "gelu", Inputs = [shape], Op = t => Ops.Gelu(t[0]), Reference = d => Reference.Map(d[0], Reference.Gelu), Init = wide });
        int rows = r.Int(1, 4), hidden = r.Int(1, 9);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "geglu",
            Inputs = [new Shape(rows, 2 * hidden)],
            Op = t => Ops.Geglu(t[0]),
            Reference = d => Reference.Geglu(d[0], rows, hidden),
            Init = wide,
        });
        int cols = r.Int(1, 12);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "softmax",
            Inputs = [new Shape(rows, cols)],
            Op = t => Ops.Softmax(t[0]),
            Reference = d => Reference.Softmax(d[0], rows, cols),
            Init = wide,
        });
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Attention(bool cross)
    {
        var r = new Rng(Seeds.One + (cross ? 1 : 0));
        int n = r.Int(1, 2), heads = r.Int(1, 3), d = r.Pick(1, 3, 4), lq = r.Int(1, 7);
        int lk = cross ? r.Int(1, 5) : lq;
        OpCheck.Run(B, r, AttentionCase($"attention cross={cross} H={heads} D={d}", n, heads, d, lq, lk));
    }

    internal static OpCase AttentionCase(string name, int n, int heads, int d, int lq, int lk)
    {
        int w = heads * d;
        return new OpCase
        {
            Name = name,
            Inputs = [new Shape(n, lq, w), new Shape(n, lk, w), new Shape(n, lk, w)],
            Op = t => Ops.Attention(t[0], t[1], t[2], heads),
            Reference = dd => Reference.Attention(dd[0], dd[1], dd[2], n, lq, lk, heads, d).O,
            Init = (rr, _, s) => rr.Uniform(s.Numel, 2f),
        };
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void TemporalAttention(int seed)
    {
        var r = new Rng(seed);
        int n = r.Int(1, 3), heads = r.Int(1, 2), d = r.Pick(2, 5, 8), f = r.Pick(1, 3, 5, 8);
        var s = new Shape(n, f, heads * d);
        OpCheck.Run(B, r, new OpCase
        {
            Name = $"temporal_attention F={f} H={heads} D={d}",
            Inputs = [s, s, s],
            Op = t => Ops.TemporalAttention(t[0], t[1], t[2], heads),
            Reference = dd => Reference.Attention(dd[0], dd[1], dd[2], n, f, f, heads, d).O,
            Init = (rr, _, sh) => rr.Uniform(sh.Numel, 2f),
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Resampling(int seed)
    {
        var r = new Rng(seed);
        int planes = r.Int(1, 3), h = 2 * r.Int(1, 3), w = 2 * r.Int(1, 3);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "avg_pool2x2",
            Inputs = [new Shape(1, planes, h, w)],
            Op = t => Ops.AvgPool2x2(t[0]),
            Reference = d => Reference.AvgPool2x2(d[0], planes, h, w),
        });
        OpCheck.Run(B, r, new OpCase
        {
            Name = "upsample2x",
            Inputs = [new Shape(planes, 1, h / 2, w)],
            Op = t => Ops.Upsample2x(t[0]),
            Reference = d => Reference.Upsample2x(d[0], planes, h / 2, w),
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Layout_ops(int seed)
    {
        var r = new Rng(seed);
        int a = r.Int(1, 3), c1 = r.Int(1, 4), c2 = r.Int(1, 4), s = r.Int(1, 5);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "concat dim 1",
            Inputs = [new Shape(a, c1, s), new Shape(a, c2, s)],
            Op = t => Ops.Concat(1, t[0], t[1]),
            Reference = d =>
            {
                var y = new List<double>();
                for (int i = 0; i < a; i++)
                {
                    y.AddRange(d[0].Skip(i * c1 * s).Take(c1 * s));
                    y.AddRange(d[1].Skip(i * c2 * s).Take(c2 * s));
                }

                return y.ToArray();
            },
        });
        int start = r.Int(0, c1 - 1), len = r.Int(1, c1 - start);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "narrow dim 1 (copy)",
            Inputs = [new Shape(a, c1, s)],
            Op = t => Ops.Narrow(t[0], 1, start, len),
            Reference = d => Enumerable.Range(0, a).SelectMany(i => d[0].Skip((i * c1 + start) * s).Take(len * s)).ToArray(),
        });
        OpCheck.Run(B, r, new OpCase
        {
            Name = "narrow dim 0 (view)",
            Inputs = [new Shape(c1, a, s)],
            Op = t => Ops.Narrow(t[0], 0, start, len),
            Reference = d => d[0].Skip(start * a * s).Take(len * a * s).ToArray(),
        });
        OpCheck.Run(B, r, new OpCase
        {
            Name = "transpose",
            Inputs = [new Shape(a, c1, s)],
            Op = t => Ops.Transpose(t[0]),
            Reference = d => Reference.Transpose(d[0], a, c1, s),
        });
        OpCheck.Run(B, r, new OpCase
        {
            Name = "reshape then scale",
            Inputs = [new Shape(a, c1 * s)],
            Op = t =>
            {
                using var v = Ops.Reshape(t[0], a * c1, s);
                return Ops.Scale(v, -1.5f);
            },
            Reference = d => d[0].Select(v => -1.5 * v).ToArray(),
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Elementwise(int seed)
    {
        var r = new Rng(seed);
        var s = new Shape(r.Int(1, 4), r.Int(1, 6));
        OpCheck.Run(B, r, new OpCase { Name = "add", Inputs = [s, s], Op = t => Ops.Add(t[0], t[1]), Reference = d => d[0].Zip(d[1], (x, y) => x + y).ToArray() });
        OpCheck.Run(B, r, new OpCase { Name = "sub", Inputs = [s, s], Op = t => Ops.Sub(t[0], t[1]), Reference = d => d[0].Zip(d[1], (x, y) => x - y).ToArray() });
        OpCheck.Run(B, r, new OpCase { Name = "combine", Inputs = [s, s], Op = t => Ops.Combine(t[0], t[1], 0.3f, -2f), Reference = d => d[0].Zip(d[1], (x, y) => 0.3f * x - 2 * y).ToArray() });
        OpCheck.Run(B, r, new OpCase { Name = "mul", Inputs = [s, s], Op = t => Ops.Mul(t[0], t[1]), Reference = d => d[0].Zip(d[1], (x, y) => x * y).ToArray() });
        OpCheck.Run(B, r, new OpCase
        {
            Name = "add the same tensor twice",
            Inputs = [s],
            Op = t => Ops.Add(t[0], t[0]),
            Reference = d => d[0].Select(x => 2 * x).ToArray(),
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Bias(int seed)
    {
        var r = new Rng(seed);
        int n = r.Int(1, 3), c = r.Int(1, 4), s = r.Int(1, 5);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "add_bias per channel",
            Inputs = [new Shape(n, c, s), new Shape(c)],
            Op = t => Ops.AddBias(t[0], t[1], 1),
            Reference = d => d[0].Select((x, i) => x + d[1][i / s % c]).ToArray(),
        });
        OpCheck.Run(B, r, new OpCase
        {
            Name = "add_bias per sample",
            Inputs = [new Shape(n, c, s), new Shape(n, c)],
            Op = t => Ops.AddBias(t[0], t[1], 1),
            Reference = d => d[0].Select((x, i) => x + d[1][i / s]).ToArray(),
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Losses_and_sums(int seed)
    {
        var r = new Rng(seed);
        var s = new Shape(r.Int(1, 4), r.Int(1, 7));
        OpCheck.Run(B, r, new OpCase
        {
            Name = "mse_loss",
            Inputs = [s, s],
            Op = t => Ops.MseLoss(t[0], t[1]),
            Reference = d => [d[0].Zip(d[1], (x, y) => (x - y) * (x - y)).Average()],
        });
        OpCheck.Run(B, r, new OpCase { Name = "sum", Inputs = [s], Op = t => Ops.Sum(t[0]), Reference = d => [d[0].Sum()] });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Embedding(int seed)
    {
        var r = new Rng(seed);
        int vocab = r.Int(2, 6), dim = r.Int(1, 5);
        int[] ids = r.Ints(r.Int(1, 7), vocab);
        OpCheck.Run(B, r, new OpCase
        {
            Name = "embedding",
            Inputs = [new Shape(vocab, dim)],
            Op = t => Ops.Embedding(ids, t[0]),
            Reference = d => ids.SelectMany(id => d[0].Skip(id * dim).Take(dim)).ToArray(),
        });
    }
}

public sealed class CpuOpGradientTests(CpuFixture f) : OpGradientTests(f), IClassFixture<CpuFixture>;
public sealed class CudaOpGradientTests(CudaFixture f) : OpGradientTests(f), IClassFixture<CudaFixture>;
