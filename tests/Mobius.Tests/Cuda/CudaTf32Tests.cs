using Mobius.Cuda;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// TF32 math (<see cref="CudaBackend.Tf32"/>): every op that multiplies on cuBLAS or cuDNN, checked against the fp64
/// reference and finite differences at TF32's tolerances. The simulator reads fp32 inputs rounded to TF32 wherever
/// cuBLAS's math mode or cuDNN's math type lets a GPU do so, so there the results also differ from strict fp32 by
/// far more than fp32's rounding: the setting is shown to reach both libraries. The class has its own backend
/// instance, so the setting reaches no other test.
/// </summary>
public sealed class CudaTf32Tests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    /// <summary>
    /// TF32 keeps 10 of fp32's 23 mantissa bits: every input is off by up to 2^-11 of itself, every product by
    /// 2^-10, and a sum of K products of random sign by about sqrt(K) 2^-10 times a typical product. The shapes here
    /// keep K under 150 (errors near 1e-2 at most); a wrong layout or a lost term errs by the values themselves.
    /// </summary>
    private static OpCase AtTf32(OpCase c) => new()
    {
        Name = c.Name + " in TF32",
        Inputs = c.Inputs,
        RequiresGrad = c.RequiresGrad,
        Op = c.Op,
        Reference = c.Reference,
        Init = c.Init,
        ForwardAtol = 2e-2,
        ForwardRtol = 1e-2,
        GradAtol = 3e-2,
        GradRtol = 2e-2,
    };

    private T WithTf32<T>(Func<T> run)
    {
        B.Tf32 = true;
        try
        {
            return run();
        }
        finally
        {
            B.Tf32 = false;
        }
    }

    public static TheoryData<string, int> Cases => new()
    {
        { "linear", 1 }, { "linear", 2 }, { "conv2d", 1 }, { "conv2d", 2 }, { "temporal_conv", 1 }, { "temporal_conv", 2 }, { "attention", 1 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Ops_on_cublas_and_cudnn_match_the_reference_at_tf32_tolerances(string op, int seed)
    {
        var r = new Rng(Seeds.One * 19 + seed);
        OpCase c = op switch
        {
            "linear" => LinearCase(r.Int(3, 9), r.Int(40, 90), r.Int(2, 9)),
            "conv2d" => Conv2dCase(r.Int(1, 2), r.Int(4, 9), r.Int(2, 5), r.Int(4, 7), r.Int(4, 7)),
            "temporal_conv" => Mobius.Tests.Engine.OpGradientTests.TemporalConvCase("temporal_conv", r.Int(1, 3), r.Pick(1, 2, 4), r.Int(8, 30), r.Int(2, 9), r.Int(1, 3), r.Int(2, 4)),
            _ => Mobius.Tests.Engine.OpGradientTests.AttentionCase("attention", r.Int(1, 2), r.Int(1, 2), r.Pick(8, 16), r.Int(3, 9), r.Int(3, 9)),
        };
        WithTf32(() =>
        {
            OpCheck.Run(B, r, AtTf32(c));
            return 0;
        });
    }

    [Fact]
    public void Tf32_reaches_cublas_and_cudnn_and_stays_within_its_rounding()
    {
        var r = new Rng(Seeds.One * 19 + 7);
        int rows = 24, inF = 128, outF = 16, n = 1, cin = 12, cout = 6, h = 6, w = 6;
        var x = r.Uniform(rows * inF);
        var wl = r.Uniform(outF * inF);
        var xi = r.Uniform(n * cin * h * w);
        var wc = r.Uniform(cout * cin * 9);
        var wantLinear = Reference.Linear(x.Select(v => (double)v).ToArray(), wl.Select(v => (double)v).ToArray(), null, rows, inF, outF);
        var wantConv = Reference.Conv2d(xi.Select(v => (double)v).ToArray(), wc.Select(v => (double)v).ToArray(), null, n, cin, h, w, cout, 3, 1, 1);

        (float[] Linear, float[] Conv) Run()
        {
            using var nograd = Tape.NoGrad();
            using var a = Tensor.FromArray(B, x, new Shape(rows, inF));
            using var b = Tensor.FromArray(B, wl, new Shape(outF, inF));
            using var c = Tensor.FromArray(B, xi, new Shape(n, cin, h, w));
            using var d = Tensor.FromArray(B, wc, new Shape(cout, cin, 3, 3));
            using var y = Ops.Linear(a, b);
            using var z = Ops.Conv2d(c, d, null, 1, 1);
            return (y.ToArray(), z.ToArray());
        }

        var strict = Run();
        var tf32 = WithTf32(Run);
        Assert.Equal("fp32", B.MathMode);
        Close.All(strict.Linear, wantLinear, 1e-5, 1e-4, "linear in fp32");
        Close.All(strict.Conv, wantConv, 1e-5, 1e-4, "conv2d in fp32");
        Close.All(tf32.Linear, wantLinear, 2e-2, 1e-2, "linear in TF32");
        Close.All(tf32.Conv, wantConv, 2e-2, 1e-2, "conv2d in TF32");
        if (fixture.Simulated)
        {
            // 128 and 108 products per output, each input rounded to 11 significant bits
            Assert.True(MaxDifference(tf32.Linear, strict.Linear) > 1e-4, "cuBLAS did not compute in TF32");
            Assert.True(MaxDifference(tf32.Conv, strict.Conv) > 1e-4, "cuDNN did not compute in TF32");
        }

        // Back in fp32 the plans and the math mode are strict again, to the bit
        var again = Run();
        Assert.Equal(strict.Linear, again.Linear);
        Assert.Equal(strict.Conv, again.Conv);
    }

    [Fact]
    public void The_temporal_convolution_follows_tf32_onto_cublas_unless_told_otherwise()
    {
        Assert.False(B.Tf32);
        Assert.False(B.TemporalConvOnCublas);
        var r = new Rng(Seeds.One * 19 + 11);
        int b = 2, f = 3, c = 5, s = 4;
        var x = r.Uniform(b * f * c * s);
        var wt = r.Uniform(c * c * 3);
        var calls = WithTf32(() =>
        {
            Assert.Equal("tf32", B.MathMode);
            Assert.True(B.TemporalConvOnCublas);
            B.ResetCallCounts();
            using var tape = Tape.Begin();
            using var xt = Tensor.FromArray(B, x, new Shape(b * f, c, 2, 2));
            using var w = Tensor.FromArray(B, wt, new Shape(c, c, 3));
            w.SetRequiresGrad();
            xt.SetRequiresGrad();
            using (var y = Ops.TemporalConv(xt, w, null, f))
            using (var loss = Ops.Sum(y))
            {
                loss.Backward();
            }

            w.ClearGrad();
            xt.ClearGrad();
            return B.CallCounts!.ToDictionary(kv => kv.Key, kv => kv.Value);
        });

        // forward and backward data as frame-window GEMMs, the weight gradient as channel-major copies and GEMMs
        Assert.Equal(2, calls.GetValueOrDefault("temporal_conv_taps_f32"));
        Assert.Equal(2, calls.GetValueOrDefault("temporal_conv_channel_major_f32"));
        Assert.Equal(1, calls.GetValueOrDefault("temporal_conv_taps_to_weight_f32"));
        Assert.DoesNotContain(calls.Keys, k => k.StartsWith("temporal_conv_fwd", StringComparison.Ordinal) || k.StartsWith("temporal_conv_bwd", StringComparison.Ordinal));
        Assert.False(B.TemporalConvOnCublas);
    }

    [Fact]
    public void MOBIUS_MATH_takes_fp32_or_tf32_and_refuses_anything_else()
    {
        Assert.False(CudaBackend.MathSetting(null));
        Assert.False(CudaBackend.MathSetting(""));
        Assert.False(CudaBackend.MathSetting("fp32"));
        Assert.True(CudaBackend.MathSetting("tf32"));
        Assert.Contains("expected fp32", Assert.Throws<ArgumentException>(() => CudaBackend.MathSetting("bf16")).Message);
    }

    private static double MaxDifference(float[] a, float[] b) => a.Zip(b, (p, q) => Math.Abs((double)p - q)).Max();

    private static OpCase LinearCase(int rows, int inF, int outF) => new()
    {
        Name = $"linear {rows}x{inF}->{outF}",
        Inputs = [new Shape(rows, inF), new Shape(outF, inF), new Shape(outF)],
        Op = t => Ops.Linear(t[0], t[1], t[2]),
        Reference = d => Reference.Linear(d[0], d[1], d[2], rows, inF, outF),
    };

    private static OpCase Conv2dCase(int n, int cin, int cout, int h, int w) => new()
    {
        Name = $"conv2d 3x3 {cin}->{cout}",
        Inputs = [new Shape(n, cin, h, w), new Shape(cout, cin, 3, 3), new Shape(cout)],
        Op = t => Ops.Conv2d(t[0], t[1], t[2], 1, 1),
        Reference = d => Reference.Conv2d(d[0], d[1], d[2], n, cin, h, w, cout, 3, 1, 1),
    };
}
