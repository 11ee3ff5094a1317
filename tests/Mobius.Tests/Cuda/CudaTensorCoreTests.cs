using Mobius.Cuda;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// Tensor-core math (<see cref="CudaBackend.TensorCores"/>, TF32 and bf16): every op that multiplies on cuBLAS or
/// cuDNN, checked against the fp64 reference and finite differences at the mode's tolerances. The simulator reads
/// fp32 inputs rounded as a GPU's tensor cores would (TF32 where cuBLAS's math mode or cuDNN's math type allows it,
/// bf16 for CUBLAS_COMPUTE_32F_FAST_16BF), so there the results also differ from strict fp32 by far more than
/// fp32's rounding: each setting is shown to reach the libraries. The class has its own backend instance, so the
/// setting reaches no other test.
/// </summary>
public sealed class CudaTensorCoreTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    /// <summary>
    /// TF32 keeps 10 of fp32's 23 mantissa bits, bf16 7: every input is off by up to 2^-11 (2^-8) of itself, every
    /// product by 2^-10 (2^-7), and a sum of K products of random sign by about sqrt(K) times that of a typical
    /// product. The shapes here keep K under 150; a wrong layout or a lost term errs by the values themselves.
    /// </summary>
    internal static OpCase At(TensorCoreMath mode, OpCase c) => new()
    {
        Name = $"{c.Name} in {CudaBackend.MathName(mode)}",
        Inputs = c.Inputs,
        RequiresGrad = c.RequiresGrad,
        Op = c.Op,
        Reference = c.Reference,
        Init = c.Init,
        ForwardAtol = mode == TensorCoreMath.Bf16 ? 1e-1 : 2e-2,
        ForwardRtol = mode == TensorCoreMath.Bf16 ? 5e-2 : 1e-2,
        GradAtol = mode == TensorCoreMath.Bf16 ? 1.5e-1 : 3e-2,
        GradRtol = mode == TensorCoreMath.Bf16 ? 8e-2 : 2e-2,
    };

    /// <summary>Runs in a mode, every temporal convolution taken to cuBLAS (the tests' shapes are below the size rule's).</summary>
    private T With<T>(TensorCoreMath mode, Func<T> run, double cublasMinFlops = 0)
    {
        B.TensorCores = mode;
        B.TemporalConvCublasMinFlops = cublasMinFlops;
        try
        {
            return run();
        }
        finally
        {
            B.TensorCores = TensorCoreMath.None;
            B.TemporalConvCublasMinFlops = 1e9;
        }
    }

    public static TheoryData<string, int, TensorCoreMath> Cases
    {
        get
        {
            var data = new TheoryData<string, int, TensorCoreMath>();
            foreach (var mode in new[] { TensorCoreMath.Tf32, TensorCoreMath.Bf16 })
            {
                foreach (var (op, seed) in new[] { ("linear", 1), ("linear", 2), ("conv2d", 1), ("conv2d", 2), ("temporal_conv", 1), ("temporal_conv", 2), ("attention", 1) })
                {
                    data.Add(op, seed, mode);
                }
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Ops_on_cublas_and_cudnn_match_the_reference_at_the_modes_tolerances(string op, int seed, TensorCoreMath mode)
    {
        var r = new Rng(Seeds.One * 19 + seed);
        OpCase c = op switch
        {
            "linear" => LinearCase(r.Int(3, 9), r.Int(40, 90), r.Int(2, 9)),
            "conv2d" => Conv2dCase(r.Int(1, 2), r.Int(4, 9), r.Int(2, 5), r.Int(4, 7), r.Int(4, 7)),
            "temporal_conv" => Mobius.Tests.Engine.OpGradientTests.TemporalConvCase("temporal_conv", r.Int(1, 3), r.Pick(1, 2, 4), r.Int(8, 30), r.Int(2, 9), r.Int(1, 3), r.Int(2, 4)),
            _ => Mobius.Tests.Engine.OpGradientTests.AttentionCase("attention", r.Int(1, 2), r.Int(1, 2), r.Pick(8, 16), r.Int(3, 9), r.Int(3, 9)),
        };
        With(mode, () =>
        {
            OpCheck.Run(B, r, At(mode, c));
            return 0;
        });
    }

    [Fact]
    public void Each_mode_reaches_cublas_and_cudnn_and_stays_within_its_rounding()
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
        var tf32 = With(TensorCoreMath.Tf32, Run);
        var bf16 = With(TensorCoreMath.Bf16, Run);
        Assert.Equal("fp32", B.MathMode);
        Close.All(strict.Linear, wantLinear, 1e-5, 1e-4, "linear in fp32");
        Close.All(strict.Conv, wantConv, 1e-5, 1e-4, "conv2d in fp32");
        Close.All(tf32.Linear, wantLinear, 2e-2, 1e-2, "linear in TF32");
        Close.All(tf32.Conv, wantConv, 2e-2, 1e-2, "conv2d in TF32");
        Close.All(bf16.Linear, wantLinear, 1e-1, 5e-2, "linear in bf16");
        Assert.Equal(tf32.Conv, bf16.Conv); // cuDNN takes TF32 in both
        if (fixture.Simulated)
        {
            // 128 and 108 products per output, each input rounded to 11 (TF32) or 8 (bf16) significant bits
            Assert.True(MaxDifference(tf32.Linear, strict.Linear) > 1e-4, "cuBLAS did not compute in TF32");
            Assert.True(MaxDifference(tf32.Conv, strict.Conv) > 1e-4, "cuDNN did not compute in TF32");
            Assert.True(MaxDifference(bf16.Linear, tf32.Linear) > 1e-3, "cuBLAS did not compute in bf16");
        }

        // Back in fp32 the plans and the math mode are strict again, to the bit
        var again = Run();
        Assert.Equal(strict.Linear, again.Linear);
        Assert.Equal(strict.Conv, again.Conv);
    }

    [Theory]
    [InlineData(TensorCoreMath.None)]
    [InlineData(TensorCoreMath.Tf32)]
    [InlineData(TensorCoreMath.Bf16)]
    public void The_temporal_convolution_runs_on_cublas_where_it_is_large_enough_in_every_math_mode(TensorCoreMath mode)
    {
        Assert.Equal(TensorCoreMath.None, B.TensorCores);
        Assert.Null(B.TemporalConvOnCublas);
        var r = new Rng(Seeds.One * 19 + 11);
        int b = 2, f = 3, c = 5, s = 4;
        var x = r.Uniform(b * f * c * s);
        var wt = r.Uniform(c * c * 3);
        Dictionary<string, long> Calls()
        {
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
        }

        static bool OurKernels(Dictionary<string, long> calls) =>
            calls.Keys.Any(k => k.StartsWith("temporal_conv_fwd", StringComparison.Ordinal) || k.StartsWith("temporal_conv_bwd", StringComparison.Ordinal));

        // A convolution this small (360 forward FLOPs), in any mode: our kernels
        Assert.True(OurKernels(Calls()));
        Assert.True(OurKernels(With(mode, Calls, cublasMinFlops: 1e9)));
        Assert.True(new TemporalConvShape(1, 16, 320, 320, 1024).Flops >= 1e9, "ms256's first level is over the rule's size");

        // At or above the size: forward and backward data as frame-window GEMMs, the weight gradient as channel-major
        // copies and GEMMs
        var calls = With(mode, Calls, cublasMinFlops: 360);
        Assert.Equal(2, calls.GetValueOrDefault("temporal_conv_taps_f32"));
        Assert.Equal(2, calls.GetValueOrDefault("temporal_conv_channel_major_f32"));
        Assert.Equal(1, calls.GetValueOrDefault("temporal_conv_taps_to_weight_f32"));
        Assert.False(OurKernels(calls));

        // fp32 and TF32 (the handle's math mode) call Sgemm; bf16 is a compute type of GemmEx, which every GEMM then calls
        bool ex = calls.ContainsKey("cublasGemmStridedBatchedEx"), sgemm = calls.Keys.Any(k => k.StartsWith("cublasSgemm", StringComparison.Ordinal));
        Assert.Equal(mode == TensorCoreMath.Bf16, ex);
        Assert.Equal(mode != TensorCoreMath.Bf16, sgemm);

        // A setting wins over the rule, either way
        B.TemporalConvOnCublas = false;
        Assert.True(OurKernels(With(mode, Calls)));
        B.TemporalConvOnCublas = true;
        Assert.False(OurKernels(Calls()));
        B.TemporalConvOnCublas = null;
    }

    [Fact]
    public void MOBIUS_MATH_takes_fp32_tf32_or_bf16_and_refuses_anything_else()
    {
        Assert.Equal(TensorCoreMath.None, CudaBackend.MathSetting(null));
        Assert.Equal(TensorCoreMath.None, CudaBackend.MathSetting(""));
        Assert.Equal(TensorCoreMath.None, CudaBackend.MathSetting("fp32"));
        Assert.Equal(TensorCoreMath.Tf32, CudaBackend.MathSetting("tf32"));
        Assert.Equal(TensorCoreMath.Bf16, CudaBackend.MathSetting("bf16"));
        Assert.Contains("expected fp32", Assert.Throws<ArgumentException>(() => CudaBackend.MathSetting("fp16")).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => B.TensorCores = (TensorCoreMath)7);
        Assert.Equal(TensorCoreMath.None, B.TensorCores);
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
