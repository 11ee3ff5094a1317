using Mobius.Engine;
using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>Each documented misuse raises its documented exception, naming the op and the shapes.</summary>
public abstract class ErrorTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private Tensor T(params int[] dims) => Tensor.Full(B, new Shape(dims), 0.5f);

    [Fact]
    public void Shape_mismatch_names_the_op_and_both_shapes()
    {
        using var x = T(4, 5);
        using var w = T(3, 6);
        var e = Assert.Throws<ShapeMismatchException>(() => Ops.Linear(x, w));
        Assert.Equal("linear", e.Op);
        Assert.Contains("[4, 5]", e.Message);
        Assert.Contains("[3, 6]", e.Message);

        using var a = T(2, 3);
        using var b = T(3, 2);
        var e2 = Assert.Throws<ShapeMismatchException>(() => Ops.Add(a, b));
        Assert.Equal("add", e2.Op);
        Assert.Contains("[2, 3] and [3, 2]", e2.Message);

        using var img = T(1, 4, 5, 5);
        using var k = T(2, 3, 3, 3);
        Assert.Equal("conv2d", Assert.Throws<ShapeMismatchException>(() => Ops.Conv2d(img, k)).Op);
        Assert.Equal("group_norm", Assert.Throws<ShapeMismatchException>(() => Ops.GroupNorm(img, T(4), T(4), groups: 3)).Op);
        Assert.Equal("temporal_conv", Assert.Throws<ShapeMismatchException>(() => Ops.TemporalConv(img, T(4, 4, 3), null, frames: 3)).Op);
        Assert.Equal("attention", Assert.Throws<ShapeMismatchException>(() => Ops.Attention(T(1, 2, 6), T(1, 3, 6), T(1, 3, 6), heads: 4)).Op);
        Assert.Throws<ArgumentException>(() => new Shape(2, 0));
    }

    [Fact]
    public void Element_type_mismatch_is_reported()
    {
        using var bf = Tensor.Empty(B, new Shape(2, 2), dtype: DType.BFloat16);
        using var f = T(2, 2);
        var e = Assert.Throws<DTypeMismatchException>(() => Ops.Add(f, bf));
        Assert.Equal("add", e.Op);
        Assert.Contains("bfloat16", e.Message);
    }

    [Fact]
    public void Mixing_backends_is_reported()
    {
        using var other = new CpuBackend(threads: 1);
        using var a = T(2, 2);
        using var b = Tensor.Full(other, new Shape(2, 2), 1f);
        var e = Assert.Throws<BackendMismatchException>(() => Ops.Mul(a, b));
        Assert.Equal("mul", e.Op);
    }

    [Fact]
    public void Use_after_dispose_is_reported_with_the_op()
    {
        var a = T(2, 2);
        a.Name = "activation";
        a.Dispose();
        var e = Assert.Throws<TensorDisposedException>(() => Ops.Silu(a));
        Assert.Equal("silu", e.Op);
        Assert.Contains("'activation' [2, 2]", e.Message);
        Assert.Throws<TensorDisposedException>(() => a.ToArray());
        a.Dispose();
    }

    [Fact]
    public void Bad_views_are_reported()
    {
        using var a = T(2, 6);
        Assert.Equal("reshape", Assert.Throws<ShapeMismatchException>(() => Ops.Reshape(a, 5, 2)).Op);
        Assert.Equal("narrow", Assert.Throws<ShapeMismatchException>(() => Ops.Narrow(a, 1, 4, 3)).Op);
        Assert.Equal("embedding", Assert.Throws<ShapeMismatchException>(() => Ops.Embedding([0, 7], a)).Op);
    }
}

public sealed class CpuErrorTests(CpuFixture f) : ErrorTests(f), IClassFixture<CpuFixture>;
public sealed class CudaErrorTests(CudaFixture f) : ErrorTests(f), IClassFixture<CudaFixture>;
