using Mobius.Cuda;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// A linear layer's bias and bias gradient as cuBLASLt epilogues (<see cref="CudaBackend.GemmEpilogues"/>): the op
/// against the fp64 reference and finite differences in each math mode, the calls it issues, and buffers that are
/// not 256-byte aligned (the simulated cuBLASLt refuses a buffer less aligned than the heuristic was told). The
/// class has its own backend instance, so the setting reaches no other test.
/// </summary>
public sealed class CudaGemmEpilogueTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    private T With<T>(TensorCoreMath mode, Func<T> run)
    {
        B.GemmEpilogues = true;
        B.TensorCores = mode;
        try
        {
            return run();
        }
        finally
        {
            B.TensorCores = TensorCoreMath.None;
            B.GemmEpilogues = false;
        }
    }

    [Theory]
    [InlineData(TensorCoreMath.None, 1)]
    [InlineData(TensorCoreMath.None, 2)]
    [InlineData(TensorCoreMath.Tf32, 1)]
    [InlineData(TensorCoreMath.Bf16, 1)]
    public void A_linear_layer_with_fused_bias_matches_the_reference(TensorCoreMath mode, int seed)
    {
        var r = new Rng(Seeds.One * 29 + seed + 10 * (int)mode);
        int rows = r.Int(3, 11), inF = r.Int(5, 40), outF = r.Int(2, 13);
        // Strict fp32 to fp32's bounds (OpCase's defaults); the tensor-core modes to CudaTensorCoreTests' (K under 50 here)
        var c = new OpCase
        {
            Name = $"linear with fused bias {rows}x{inF}->{outF}",
            Inputs = [new Shape(rows, inF), new Shape(outF, inF), new Shape(outF)],
            Op = t => Ops.Linear(t[0], t[1], t[2]),
            Reference = d => Reference.Linear(d[0], d[1], d[2], rows, inF, outF),
        };
        With(mode, () =>
        {
            OpCheck.Run(B, r, mode == TensorCoreMath.None ? c : CudaTensorCoreTests.At(mode, c));
            return 0;
        });
    }

    [Fact]
    public void The_bias_and_its_gradient_ride_on_the_gemms_and_agree_with_the_separate_kernels()
    {
        var r = new Rng(Seeds.One * 29 + 5);
        int rows = 12, inF = 17, outF = 9;
        var x = r.Uniform(rows * inF);
        var w = r.Uniform(outF * inF);
        var bias = r.Uniform(outF);
        var upstream = r.Uniform(rows * outF);

        (float[] Y, float[] Dx, float[] Dw, float[] Db, Dictionary<string, long> Calls) Run()
        {
            B.ResetCallCounts();
            using var tape = Tape.Begin();
            using var xt = Tensor.FromArray(B, x, new Shape(rows, inF));
            using var wt = Tensor.FromArray(B, w, new Shape(outF, inF));
            using var bt = Tensor.FromArray(B, bias, new Shape(outF));
            using var g = Tensor.FromArray(B, upstream, new Shape(rows, outF));
            foreach (var t in new[] { xt, wt, bt })
            {
                t.SetRequiresGrad();
            }

            float[] y;
            using (var yt = Ops.Linear(xt, wt, bt))
            {
                y = yt.ToArray();
                yt.Backward(g);
            }

            var result = (y, xt.Grad!.ToArray(), wt.Grad!.ToArray(), bt.Grad!.ToArray(), B.CallCounts!.ToDictionary(kv => kv.Key, kv => kv.Value));
            foreach (var t in new[] { xt, wt, bt })
            {
                t.ClearGrad();
            }

            return result;
        }

        var separate = Run();
        var fused = With(TensorCoreMath.None, Run);
        Close.All(fused.Y, separate.Y, 1e-6, 1e-5, "forward");
        Close.All(fused.Dx, separate.Dx, 1e-6, 1e-5, "dx");
        Close.All(fused.Dw, separate.Dw, 1e-6, 1e-5, "dw");
        Close.All(fused.Db, separate.Db, 1e-6, 1e-5, "db");

        Assert.Equal(2, fused.Calls.GetValueOrDefault("cublasLtMatmul")); // forward with its bias, dw with db
        Assert.False(fused.Calls.ContainsKey("add_channel_bias_f32"));
        Assert.False(fused.Calls.ContainsKey("channel_bias_grad_f32"));
        Assert.Equal(1, separate.Calls.GetValueOrDefault("add_channel_bias_f32"));
        Assert.Equal(1, separate.Calls.GetValueOrDefault("channel_bias_grad_f32"));
        Assert.False(separate.Calls.ContainsKey("cublasLtMatmul"));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Views_that_start_off_any_alignment_are_declared_as_such(int skipRows)
    {
        // x is rows skipRows.. of a larger tensor: with 7 features a row is 28 bytes, so the view starts 28, 56 or 84
        // bytes into its block: aligned to 4 bytes only, or 8.
        var r = new Rng(Seeds.One * 29 + 20 + skipRows);
        int rows = 5, inF = 7, outF = 6;
        var all = r.Uniform((rows + skipRows) * inF);
        var w = r.Uniform(outF * inF);
        var bias = r.Uniform(outF);
        var want = Reference.Linear(all.Skip(skipRows * inF).Select(v => (double)v).ToArray(), w.Select(v => (double)v).ToArray(),
            bias.Select(v => (double)v).ToArray(), rows, inF, outF);
        var got = With(TensorCoreMath.None, () =>
        {
            using var nograd = Tape.NoGrad();
            using var whole = Tensor.FromArray(B, all, new Shape(rows + skipRows, inF));
            using var x = Ops.Narrow(whole, 0, skipRows, rows);
            using var wt = Tensor.FromArray(B, w, new Shape(outF, inF));
            using var bt = Tensor.FromArray(B, bias, new Shape(outF));
            B.ResetCallCounts();
            using var y = Ops.Linear(x, wt, bt);
            Assert.Equal(1, B.CallCounts!.GetValueOrDefault("cublasLtMatmul"));
            return y.ToArray();
        });
        Close.All(got, want, 1e-5, 1e-4, $"linear over a view {skipRows} rows in");
    }

    [Fact]
    public void MOBIUS_GEMM_EPILOGUES_takes_on_or_off_and_refuses_anything_else()
    {
        Assert.False(CudaBackend.EpilogueSetting(null));
        Assert.False(CudaBackend.EpilogueSetting("off"));
        Assert.True(CudaBackend.EpilogueSetting("on"));
        Assert.Contains("expected off", Assert.Throws<ArgumentException>(() => CudaBackend.EpilogueSetting("yes")).Message);
    }
}
