using Mobius.Engine;
using Mobius.Engine.Autograd;
using Xunit;

namespace Mobius.Tests;

/// <summary>One op under test: how to run it on tensors and on doubles, and the tolerances that apply.</summary>
public sealed class OpCase
{
    public required string Name { get; init; }

    public required Shape[] Inputs { get; init; }

    /// <summary>Which inputs require a gradient (default: all).</summary>
    public bool[]? RequiresGrad { get; init; }

    public required Func<Tensor[], Tensor> Op { get; init; }

    public required Func<double[][], double[]> Reference { get; init; }

    /// <summary>Forward tolerance: fp32 against the fp64 reference.</summary>
    public double ForwardAtol { get; init; } = 1e-5;

    public double ForwardRtol { get; init; } = 1e-4;

    /// <summary>Gradient tolerance: fp32 analytic gradients against fp64 central differences of the reference.</summary>
    public double GradAtol { get; init; } = 1e-4;

    public double GradRtol { get; init; } = 1e-3;

    /// <summary>Custom input values (for example positive, or spread apart); default uniform in [-1, 1].</summary>
    public Func<Rng, int, Shape, float[]>? Init { get; init; }
}

/// <summary>
/// Runs an <see cref="OpCase"/>: forward against the reference, then backward with a random upstream
/// gradient against central finite differences (fp64) of the reference, for every input that requires
/// a gradient; then checks that the tape is empty and that nothing leaked on the backend.
/// </summary>
public static class OpCheck
{
    public static void Run(IBackend backend, Rng rng, OpCase c)
    {
        long before = backend.Memory.CurrentBytes;
        using (var tape = Tape.Begin())
        {
            var data = c.Inputs.Select((s, i) => c.Init?.Invoke(rng, i, s) ?? rng.Uniform(s.Numel)).ToArray();
            var doubles = data.Select(d => d.Select(v => (double)v).ToArray()).ToArray();
            var tensors = new Tensor[data.Length];
            try
            {
                for (int i = 0; i < data.Length; i++)
                {
                    tensors[i] = Tensor.FromArray(backend, data[i], c.Inputs[i]);
                    tensors[i].Name = $"in{i}";
                    if (c.RequiresGrad?[i] ?? true)
                    {
                        tensors[i].SetRequiresGrad();
                    }
                }

                var want = c.Reference(doubles);
                using (var y = c.Op(tensors))
                {
                    Close.All(y.ToArray(), want, c.ForwardAtol, c.ForwardRtol, $"{c.Name} forward ({rng})");
                    var upstream = rng.Uniform(y.Numel);
                    var g64 = upstream.Select(v => (double)v).ToArray();
                    using var g = Tensor.FromArray(backend, upstream, y.Shape);
                    y.Backward(g);
                    Assert.Equal(0, tape.NodeCount);
                    Assert.Equal(0, tape.SavedBytes);

                    for (int i = 0; i < data.Length; i++)
                    {
                        if (!(c.RequiresGrad?[i] ?? true))
                        {
                            Assert.Null(tensors[i].Grad);
                            continue;
                        }

                        int which = i;
                        var fd = FiniteDifference.Gradient(xi =>
                        {
                            var args = (double[][])doubles.Clone();
                            args[which] = xi;
                            return FiniteDifference.Dot(g64, c.Reference(args));
                        }, doubles[i]);
                        Assert.True(tensors[i].Grad is not null, $"{c.Name}: input {i} received no gradient ({rng}).");
                        Close.All(tensors[i].Grad!.ToArray(), fd, c.GradAtol, c.GradRtol, $"{c.Name} d/d(input {i}) ({rng})");
                    }
                }
            }
            finally
            {
                foreach (var t in tensors)
                {
                    t?.ClearGrad();
                    t?.Dispose();
                }
            }
        }

        Assert.Equal(before, backend.Memory.CurrentBytes);
    }
}
