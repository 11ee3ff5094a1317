namespace Mobius.Engine;

/// <summary>
/// A backend that holds shapes and no data, like PyTorch's "meta" device: building a model on it
/// allocates nothing and runs no initialiser, so parameter counts and weight bytes of even the
/// ms256 configuration are known instantly. By default every op throws <see cref="NotSupportedException"/>.
/// A dry-run meta backend instead lets every op through without computing anything (reads give zeros): a
/// whole training step then makes exactly the allocations it makes on a real backend, and the memory
/// tracker plans its peak by category (`mobius plan`) in moments, with no device.
/// </summary>
public sealed class MetaBackend : IBackend
{
    private readonly CachingAllocator _allocator;
    private readonly bool _dryRun;

    /// <summary>Creates a meta backend; with <paramref name="dryRun"/> ops do nothing instead of throwing.</summary>
    public MetaBackend(bool dryRun = false)
    {
        _allocator = new CachingAllocator(new NoMemory(), this);
        _dryRun = dryRun;
    }

    /// <summary>Whether ops run as no-ops (true) or throw (false).</summary>
    public bool DryRun => _dryRun;

    /// <inheritdoc />
    public string Name => "meta";

    /// <inheritdoc />
    public string DeviceName => "shapes only";

    /// <inheritdoc />
    public MemoryTracker Memory { get; } = new();

    /// <inheritdoc />
    public Storage Allocate(long bytes, MemoryCategory category) => _allocator.Allocate(bytes, category);

    /// <inheritdoc />
    public void EmptyCache() => _allocator.EmptyCache();

    /// <inheritdoc />
    public void Synchronize()
    {
    }

    /// <inheritdoc />
    public void Dispose() => _allocator.Dispose();

    /// <inheritdoc />
    public void CopyFromHost(ReadOnlySpan<float> src, Tensor dst) => Skip();

    /// <inheritdoc />
    public void CopyToHost(Tensor src, Span<float> dst)
    {
        Skip();
        dst.Clear();
    }

    /// <inheritdoc />
    public void Fill(Tensor dst, float value) => Skip();

    /// <inheritdoc />
    public void Cast(Tensor x, Tensor y) => Skip();

    /// <inheritdoc />
    public void CopyRows(Tensor src, long srcOffset, long srcRowStride, Tensor dst, long dstOffset, long dstRowStride, int rows, int cols) => Skip();

    /// <inheritdoc />
    public void Transpose(int batch, int rows, int cols, Tensor x, Tensor y) => Skip();

    /// <inheritdoc />
    public void Add(Tensor a, Tensor b, Tensor y, float alpha = 1f, float beta = 1f) => Skip();

    /// <inheritdoc />
    public void Mul(Tensor a, Tensor b, Tensor y) => Skip();

    /// <inheritdoc />
    public void Scale(Tensor x, float alpha, Tensor y) => Skip();

    /// <inheritdoc />
    public void AddChannelBias(int outer, int channels, int inner, Tensor x, Tensor bias, Tensor y, bool perOuter = false) => Skip();

    /// <inheritdoc />
    public void ChannelBiasGrad(int outer, int channels, int inner, Tensor dy, Tensor dbias, bool perOuter = false) => Skip();

    /// <inheritdoc />
    public void ActivationForward(Activation act, Tensor x, Tensor y) => Skip();

    /// <inheritdoc />
    public void ActivationBackward(Activation act, Tensor x, Tensor dy, Tensor dx) => Skip();

    /// <inheritdoc />
    public void GegluForward(int rows, int hidden, Tensor x, Tensor y) => Skip();

    /// <inheritdoc />
    public void GegluBackward(int rows, int hidden, Tensor x, Tensor dy, Tensor dx) => Skip();

    /// <inheritdoc />
    public void SoftmaxForward(int rows, int cols, Tensor x, Tensor y) => Skip();

    /// <inheritdoc />
    public void SoftmaxBackward(int rows, int cols, Tensor y, Tensor dy, Tensor dx) => Skip();

    /// <inheritdoc />
    public void Gemm(in GemmShape s, float alpha, Tensor a, Tensor b, float beta, Tensor c) => Skip();

    /// <inheritdoc />
    public void Conv2dForward(in Conv2dShape s, Tensor x, Tensor w, Tensor? bias, Tensor y) => Skip();

    /// <inheritdoc />
    public void Conv2dBackwardData(in Conv2dShape s, Tensor dy, Tensor w, Tensor dx) => Skip();

    /// <inheritdoc />
    public void Conv2dBackwardFilter(in Conv2dShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias) => Skip();

    /// <inheritdoc />
    public void TemporalConvForward(in TemporalConvShape s, Tensor x, Tensor w, Tensor? bias, Tensor y) => Skip();

    /// <inheritdoc />
    public void TemporalConvBackwardData(in TemporalConvShape s, Tensor dy, Tensor w, Tensor dx) => Skip();

    /// <inheritdoc />
    public void TemporalConvBackwardWeight(in TemporalConvShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias) => Skip();

    /// <inheritdoc />
    public void GroupNormForward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, bool silu) => Skip();

    /// <inheritdoc />
    public void GroupNormBackward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor mean, Tensor rstd, Tensor dy, Tensor? dx, Tensor? dgamma, Tensor? dbeta, bool silu, Tensor? dxAddend = null) => Skip();

    /// <inheritdoc />
    public void LayerNormForward(int rows, int cols, float eps, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd) => Skip();

    /// <inheritdoc />
    public void LayerNormBackward(int rows, int cols, Tensor x, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy, Tensor? dx, Tensor? dgamma, Tensor? dbeta, Tensor? dxAddend = null) => Skip();

    /// <inheritdoc />
    public void AttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse) => Skip();

    /// <inheritdoc />
    public void AttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO, Tensor dq, Tensor dk, Tensor dv) => Skip();

    /// <inheritdoc />
    public void TemporalAttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse) => Skip();

    /// <inheritdoc />
    public void TemporalAttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO, Tensor dq, Tensor dk, Tensor dv) => Skip();

    /// <inheritdoc />
    public void AvgPool2x2Forward(int planes, int h, int w, Tensor x, Tensor y) => Skip();

    /// <inheritdoc />
    public void AvgPool2x2Backward(int planes, int h, int w, Tensor dy, Tensor dx) => Skip();

    /// <inheritdoc />
    public void Upsample2xForward(int planes, int h, int w, Tensor x, Tensor y) => Skip();

    /// <inheritdoc />
    public void Upsample2xBackward(int planes, int h, int w, Tensor dy, Tensor dx) => Skip();

    /// <inheritdoc />
    public void EmbeddingForward(ReadOnlySpan<int> ids, Tensor table, Tensor y) => Skip();

    /// <inheritdoc />
    public void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dy, Tensor dtable) => Skip();

    /// <inheritdoc />
    public void MseForward(Tensor a, Tensor b, Tensor output) => Skip();

    /// <inheritdoc />
    public void MseBackward(Tensor a, Tensor b, Tensor dOut, Tensor da) => Skip();

    /// <inheritdoc />
    public void Sum(Tensor x, Tensor output) => Skip();

    /// <inheritdoc />
    public void SumSquaresAccumulate(Tensor x, Tensor output) => Skip();

    /// <inheritdoc />
    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWStepArgs args) => Skip();

    private void Skip()
    {
        if (!_dryRun)
        {
            throw new NotSupportedException("the meta backend holds shapes only; use cpu or cuda to compute.");
        }
    }

    /// <summary>Distinct fake addresses, no memory.</summary>
    private sealed class NoMemory : IRawMemory
    {
        private long _next = 4096;

        public nint Alloc(long bytes) => (nint)Interlocked.Add(ref _next, Math.Max(bytes, 1) + 4096);

        public void Free(nint handle, long bytes)
        {
        }

        public void Poison(nint handle, long bytes)
        {
        }
    }
}
