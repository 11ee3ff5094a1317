using Mobius.Engine;
using Mobius.Engine.Autograd;

namespace Mobius.Model;

/// <summary>
/// Experimental: a mean-field linearisation of one frozen spatial layer y = f(x), measured on its real inputs, for the
/// loop bridge to pass its gradient through instead of the layer's skip path alone. Two C x C matrices:
/// <list type="bullet">
/// <item><description><see cref="Weight"/>, A: the mean over pixels of a pixel's own Jacobian, dy_t / dx_t;</description></item>
/// <item><description><see cref="ImageMean"/>, B (optional): what the image's mean input does to every pixel, the part of
/// the Jacobian that mixes pixels (attention over a small image is nearly global).</description></item>
/// </list>
/// The model is dy_t = A dx_t + B mean_t'(dx_t'), so backward takes dx_t = A^T dy_t + B^T mean_t'(dy_t'). Both are
/// measured by random probes on a private tape: for Rademacher v at the output and g = J^T v, a pixel's
/// E[v_t g_t^T] is its own Jacobian (A + B / T over T pixels) and an image's E[(sum_t v_t)(sum_t g_t)^T] is T (A + B).
/// Nothing of the layer is kept: the matrices are weights-sized, and the backward costs a 1x1 convolution.
/// </summary>
internal sealed class LoopJacobian : IDisposable
{
    private readonly double[] _pixelSum;
    private readonly double[] _imageSum;
    private readonly Random _rng;
    private Tensor? _meanColumn; // [T, 1] of 1/T: an image's mean, for Path
    private Tensor? _spreadRow; // [1, T] of ones: a value to every pixel, for Path
    private long _pixels;
    private long _images;
    private int _perImage;

    /// <summary>A measurement of a layer from <paramref name="cin"/> to <paramref name="cout"/> channels; <paramref name="imageMean"/> also fits B.</summary>
    public LoopJacobian(int cin, int cout, int seed, bool imageMean)
    {
        Cin = cin;
        Cout = cout;
        WithImageMean = imageMean;
        _pixelSum = new double[cout * cin];
        _imageSum = new double[cout * cin];
        _rng = new Random(seed);
    }

    public int Cin { get; }

    public int Cout { get; }

    public bool WithImageMean { get; }

    /// <summary>Whether <see cref="Probe"/> measures (from <see cref="UNet3D.BeginLoopJacobians"/> to its end).</summary>
    public bool Calibrating { get; set; }

    /// <summary>A as a [Cout, Cin, 1, 1] convolution weight, once measured.</summary>
    public Tensor? Weight { get; private set; }

    /// <summary>B as a [Cout, Cin] linear weight, once measured with <see cref="WithImageMean"/>.</summary>
    public Tensor? ImageMean { get; private set; }

    /// <summary>Probes <paramref name="layer"/> once at input <paramref name="h"/> [N, Cin, H, W] on a private tape.</summary>
    public void Probe(Tensor h, Func<Tensor, Tensor> layer)
    {
        if (!Tape.GradEnabled)
        {
            throw new InvalidOperationException("A loop Jacobian is measured on forwards with gradients enabled.");
        }

        if (h.Shape.Rank != 4 || h.Shape[1] != Cin)
        {
            throw new ArgumentException($"A loop Jacobian from {Cin} channels measures inputs [N, {Cin}, H, W], not {h.Shape}.", nameof(h));
        }

        int n = h.Shape[0], pixels = h.Shape[2] * h.Shape[3];
        if (_perImage != 0 && _perImage != pixels)
        {
            throw new InvalidOperationException($"A loop Jacobian is measured at one image size; it had {_perImage} pixels an image, now {pixels}.");
        }

        var backend = h.Backend;
        float[] v, g;
        using (var tape = Tape.Begin())
        using (var x = Tensor.FromArray(backend, h.ToArray(), h.Shape).SetRequiresGrad())
        using (var y = layer(x))
        {
            if (y.Shape[1] != Cout || y.Shape.Numel / Cout != h.Shape.Numel / Cin)
            {
                throw new InvalidOperationException($"A loop Jacobian from {Cin} to {Cout} channels at every pixel cannot measure a layer from {h.Shape} to {y.Shape}.");
            }

            v = new float[y.Shape.Numel];
            for (int k = 0; k < v.Length; k++)
            {
                v[k] = _rng.Next(2) == 0 ? -1f : 1f;
            }

            using var seed = Tensor.FromArray(backend, v, y.Shape);
            tape.Backward(y, seed);
            g = x.Grad!.ToArray();
            x.ClearGrad();
        }

        var sv = new double[Cout];
        var sg = new double[Cin];
        for (int b = 0; b < n; b++)
        {
            for (int o = 0; o < Cout; o++)
            {
                var vo = v.AsSpan((b * Cout + o) * pixels, pixels);
                sv[o] = 0;
                foreach (var e in vo)
                {
                    sv[o] += e;
                }

                for (int i = 0; i < Cin; i++)
                {
                    _pixelSum[o * Cin + i] += System.Numerics.Tensors.TensorPrimitives.Dot(vo, g.AsSpan((b * Cin + i) * pixels, pixels));
                }
            }

            for (int i = 0; i < Cin; i++)
            {
                sg[i] = 0;
                foreach (var e in g.AsSpan((b * Cin + i) * pixels, pixels))
                {
                    sg[i] += e;
                }
            }

            for (int o = 0; o < Cout; o++)
            {
                for (int i = 0; i < Cin; i++)
                {
                    _imageSum[o * Cin + i] += sv[o] * sg[i];
                }
            }
        }

        _perImage = pixels;
        _images += n;
        _pixels += (long)n * pixels;
    }

    /// <summary>Ends the measurement: <see cref="Weight"/> (and <see cref="ImageMean"/>) from every probe so far.</summary>
    public void Finish(IBackend backend)
    {
        Calibrating = false;
        if (_pixels == 0)
        {
            return;
        }

        var a = new float[_pixelSum.Length];
        var b = new float[_pixelSum.Length];
        int t = _perImage;
        for (int k = 0; k < a.Length; k++)
        {
            double own = _pixelSum[k] / _pixels;
            if (WithImageMean && t > 1)
            {
                // own = A + B / T, whole = A + B.
                double whole = _imageSum[k] / _images / t;
                double bk = (whole - own) * t / (t - 1);
                b[k] = (float)bk;
                a[k] = (float)(own - bk / t);
            }
            else
            {
                a[k] = (float)own;
            }
        }

        Release();
        Weight = Tensor.FromArray(backend, a, new Shape(Cout, Cin, 1, 1), MemoryCategory.Weights);
        if (WithImageMean && t > 1)
        {
            ImageMean = Tensor.FromArray(backend, b, new Shape(Cout, Cin), MemoryCategory.Weights);
            _meanColumn = Tensor.FromArray(backend, Enumerable.Repeat(1f / t, t).ToArray(), new Shape(t, 1), MemoryCategory.Weights);
            _spreadRow = Tensor.FromArray(backend, Enumerable.Repeat(1f, t).ToArray(), new Shape(1, t), MemoryCategory.Weights);
        }
    }

    /// <summary>
    /// The linear path A x_t + B mean_t'(x_t') for <paramref name="h"/> [N, Cin, H, W], whose gradient the loop passes
    /// (<see cref="Ops.StraightThrough"/> throws its value away).
    /// </summary>
    public Tensor Path(Tensor h)
    {
        var own = Ops.Conv2d(h, Weight ?? throw new InvalidOperationException("The loop Jacobian is not measured yet."));
        if (ImageMean is null)
        {
            return own;
        }

        int n = h.Shape[0], hh = h.Shape[2], ww = h.Shape[3], t = hh * ww;
        using (own)
        using (var flat = Ops.Reshape(h, n * Cin, t))
        using (var mean = Ops.MatMul(flat, _meanColumn!))
        using (var perImage = Ops.Reshape(mean, n, Cin))
        using (var mixed = Ops.Linear(perImage, ImageMean))
        using (var mixedColumn = Ops.Reshape(mixed, n * Cout, 1))
        using (var spread = Ops.MatMul(mixedColumn, _spreadRow!))
        using (var spread4 = Ops.Reshape(spread, n, Cout, hh, ww))
        {
            return Ops.Add(own, spread4);
        }
    }

    public void Dispose() => Release();

    /// <summary>Frees the measured tensors (a new <see cref="Finish"/> makes them again).</summary>
    private void Release()
    {
        Weight?.Dispose();
        ImageMean?.Dispose();
        _meanColumn?.Dispose();
        _spreadRow?.Dispose();
        Weight = ImageMean = _meanColumn = _spreadRow = null;
    }
}
