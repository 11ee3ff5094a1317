using Mobius.Engine;
using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// The convolutions the CPU backend lowers to <see cref="Sgemm"/> (prepacked weights, k-segmented sums over
/// images and frames, depth slices at clip edges), forward and both backward ops, on shapes like the
/// model's (channels past one micro-tile, 4x4 to 16x16 images, stride 2, 1x1, enough images that the
/// filter gradient runs in several groups, 1 to 8 frames) against fp64 loops over every (output, tap)
/// pair. Tolerance of each output: atol = (K + 3) * 2^-24 * max sum |terms|, rtol = 0, with K the
/// number of terms summed into one value: the fp32 summation bound used in <see cref="SgemmTests"/>.
/// </summary>
public sealed class SgemmConvTests : IDisposable
{
    private readonly CpuBackend _cpu = new() { PoisonAllocations = true };

    public void Dispose() => _cpu.Dispose();

    [Theory]
    [InlineData(5, 20, 24, 16, 3, 1, 1)]
    [InlineData(5, 13, 40, 8, 3, 1, 1)]
    [InlineData(17, 33, 20, 4, 3, 1, 1)]
    [InlineData(17, 10, 12, 8, 3, 1, 1)]
    [InlineData(3, 9, 14, 5, 3, 1, 1)]
    [InlineData(5, 16, 16, 16, 3, 2, 1)]
    [InlineData(4, 24, 8, 8, 3, 2, 1)]
    [InlineData(5, 12, 20, 8, 1, 1, 0)]
    [InlineData(3, 7, 5, 6, 1, 2, 0)]
    [InlineData(2, 6, 5, 7, 3, 1, 0)]
    public void Conv2d_forward_and_backward_match_the_reference(int n, int cin, int cout, int size, int kernel, int stride, int pad)
    {
        var r = new Rng(Seeds.One + n * 31 + cin * 7 + size);
        var s = new Conv2dShape(n, cin, size, size, cout, kernel, stride, pad);
        float[] x = r.Uniform((long)n * cin * size * size), w = r.Uniform((long)cout * cin * kernel * kernel), bias = r.Uniform(cout);
        float[] dy = r.Uniform((long)n * cout * s.OutH * s.OutW);
        var y = new Sum(n * cout * s.OutH * s.OutW);
        var dx = new Sum(x.Length);
        var dw = new Sum(w.Length);
        for (int img = 0; img < n; img++)
        {
            for (int o = 0; o < cout; o++)
            {
                for (int p = 0; p < s.OutH; p++)
                {
                    for (int q = 0; q < s.OutW; q++)
                    {
                        int yi = ((img * cout + o) * s.OutH + p) * s.OutW + q;
                        y.Add(yi, bias[o], 1);
                        for (int i = 0; i < cin; i++)
                        {
                            for (int u = 0; u < kernel; u++)
                            {
                                for (int v = 0; v < kernel; v++)
                                {
                                    int yy = p * stride + u - pad, xx = q * stride + v - pad;
                                    if (yy >= 0 && yy < size && xx >= 0 && xx < size)
                                    {
                                        int xi = ((img * cin + i) * size + yy) * size + xx, wi = ((o * cin + i) * kernel + u) * kernel + v;
                                        y.Add(yi, w[wi], x[xi]);
                                        dx.Add(xi, w[wi], dy[yi]);
                                        dw.Add(wi, dy[yi], x[xi]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }

        using var tx = Tensor.FromArray(_cpu, x, new Shape(n, cin, size, size));
        using var tw = Tensor.FromArray(_cpu, w, new Shape(cout, cin, kernel, kernel));
        using var tb = Tensor.FromArray(_cpu, bias, new Shape(cout));
        using var tdy = Tensor.FromArray(_cpu, dy, new Shape(n, cout, s.OutH, s.OutW));
        using var ty = Tensor.Empty(_cpu, tdy.Shape);
        using var tdx = Tensor.Empty(_cpu, tx.Shape);
        using var tdw = Tensor.Empty(_cpu, tw.Shape);
        using var tdb = Tensor.Empty(_cpu, tb.Shape);
        _cpu.Conv2dForward(s, tx, tw, tb, ty);
        _cpu.Conv2dBackwardData(s, tdy, tw, tdx);
        _cpu.Conv2dBackwardFilter(s, tx, tdy, tdw, tdb);
        string what = $"{s} ({r})";
        y.Check(ty.ToArray(), cin * kernel * kernel + 1, $"forward {what}");
        dx.Check(tdx.ToArray(), cout * kernel * kernel, $"backward-data {what}");
        dw.Check(tdw.ToArray(), n * s.OutH * s.OutW, $"backward-filter {what}");
    }

    [Theory]
    [InlineData(2, 8, 32, 32, 16)]
    [InlineData(2, 8, 20, 40, 64)]
    [InlineData(3, 3, 13, 7, 20)]
    [InlineData(2, 2, 9, 17, 16)]
    [InlineData(2, 1, 8, 6, 16)]
    public void Temporal_conv_forward_and_backward_match_the_reference(int batch, int frames, int cin, int cout, int pixels)
    {
        var r = new Rng(Seeds.One + frames * 13 + cin);
        var s = new TemporalConvShape(batch, frames, cin, cout, pixels);
        float[] x = r.Uniform((long)batch * frames * cin * pixels), w = r.Uniform((long)cout * cin * 3), bias = r.Uniform(cout);
        float[] dy = r.Uniform((long)batch * frames * cout * pixels);
        var y = new Sum(dy.Length);
        var dx = new Sum(x.Length);
        var dw = new Sum(w.Length);
        for (int b = 0; b < batch; b++)
        {
            for (int f = 0; f < frames; f++)
            {
                for (int o = 0; o < cout; o++)
                {
                    for (int p = 0; p < pixels; p++)
                    {
                        int yi = ((b * frames + f) * cout + o) * pixels + p;
                        y.Add(yi, bias[o], 1);
                        for (int i = 0; i < cin; i++)
                        {
                            for (int t = 0; t < 3; t++)
                            {
                                int src = f + t - 1;
                                if (src >= 0 && src < frames)
                                {
                                    int xi = ((b * frames + src) * cin + i) * pixels + p, wi = (o * cin + i) * 3 + t;
                                    y.Add(yi, w[wi], x[xi]);
                                    dx.Add(xi, w[wi], dy[yi]);
                                    dw.Add(wi, dy[yi], x[xi]);
                                }
                            }
                        }
                    }
                }
            }
        }

        using var tx = Tensor.FromArray(_cpu, x, new Shape(batch * frames, cin, pixels));
        using var tw = Tensor.FromArray(_cpu, w, new Shape(cout, cin, 3));
        using var tb = Tensor.FromArray(_cpu, bias, new Shape(cout));
        using var tdy = Tensor.FromArray(_cpu, dy, new Shape(batch * frames, cout, pixels));
        using var ty = Tensor.Empty(_cpu, tdy.Shape);
        using var tdx = Tensor.Empty(_cpu, tx.Shape);
        using var tdw = Tensor.Empty(_cpu, tw.Shape);
        using var tdb = Tensor.Empty(_cpu, tb.Shape);
        _cpu.TemporalConvForward(s, tx, tw, tb, ty);
        _cpu.TemporalConvBackwardData(s, tdy, tw, tdx);
        _cpu.TemporalConvBackwardWeight(s, tx, tdy, tdw, tdb);
        string what = $"{s} ({r})";
        y.Check(ty.ToArray(), 3 * cin + 1, $"forward {what}");
        dx.Check(tdx.ToArray(), 3 * cout, $"backward-data {what}");
        dw.Check(tdw.ToArray(), batch * frames * pixels, $"backward-weight {what}");
    }

    /// <summary>fp64 sums of products with the sum of their magnitudes, for the tolerance.</summary>
    private sealed class Sum(int length)
    {
        private readonly double[] _value = new double[length];
        private readonly double[] _magnitude = new double[length];

        public void Add(int index, double a, double b)
        {
            _value[index] += a * b;
            _magnitude[index] += Math.Abs(a * b);
        }

        /// <param name="terms">Most terms summed into one value.</param>
        public void Check(float[] got, int terms, string what) =>
            Close.All(got, _value, atol: (terms + 3) * Math.Pow(2, -24) * _magnitude.Max(), rtol: 0, what);
    }
}
