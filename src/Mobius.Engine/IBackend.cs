namespace Mobius.Engine;

/// <summary>
/// The primitive operations every backend implements. Each op works on already allocated, contiguous
/// tensors of the backend (the caller, usually <see cref="Ops"/>, validates shapes and allocates
/// outputs); outputs are overwritten, never accumulated into, unless the doc says otherwise.
/// All layouts are row-major. The math of every op is spelled out in docs/ops.md, which the CPU
/// backend, the CUDA kernels and the test references all follow.
/// </summary>
/// <remarks>
/// Ops are asynchronous with respect to the host on device backends: a result is visible to the host
/// only through <see cref="CopyToHost"/>, which synchronises.
/// </remarks>
public interface IBackend : IDisposable
{
    /// <summary>Short backend name: "cpu", "cuda".</summary>
    string Name { get; }

    /// <summary>Human-readable description of the device this backend runs on.</summary>
    string DeviceName { get; }

    /// <summary>
    /// How the backend's fp32 matrix products and convolutions multiply: "fp32" (strict, the default), "tf32" (tensor
    /// cores reading 11 significant bits, fp32 accumulation) or "bf16" (GEMMs on bf16 tensor cores, convolutions in
    /// TF32): the CUDA backend's <c>TensorCores</c>.
    /// </summary>
    string MathMode => "fp32";

    /// <summary>Allocation statistics of this backend (current and peak bytes by category).</summary>
    MemoryTracker Memory { get; }

    /// <summary>Allocates <paramref name="bytes"/> of uninitialised device memory from the caching allocator.</summary>
    Storage Allocate(long bytes, MemoryCategory category);

    /// <summary>Returns every cached, unused block to the system.</summary>
    void EmptyCache();

    /// <summary>Waits until all queued work has finished, on every stream.</summary>
    void Synchronize();

    // ---- streams -------------------------------------------------------------------------------

    /// <summary>
    /// How many streams the backend has: queues of work that run concurrently with each other on one device, each in
    /// its own order. 1 on the CPU and meta backends, which run every op in order when it is issued; 2 on CUDA, whose
    /// second stream runs the inference-only spatial chain of the parallel topology beside the temporal ring
    /// (<see cref="SideStream"/>).
    /// </summary>
    int StreamCount => 1;

    /// <summary>The stream the ops issued from now on are queued on (0: the main stream). Buffers allocated now belong to it.</summary>
    int CurrentStream
    {
        get => 0;
        set
        {
            if (value != 0)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, $"the {Name} backend has one stream.");
            }
        }
    }

    /// <summary>
    /// Marks the work queued so far on the current stream. The mark is spent by the one <see cref="WaitEvent"/> that
    /// waits for it. <see cref="StreamEvent.None"/> on a backend with one stream.
    /// </summary>
    StreamEvent RecordEvent() => StreamEvent.None;

    /// <summary>Makes the current stream wait, on the device, for the work an event marks; spends the event.</summary>
    void WaitEvent(StreamEvent e)
    {
    }

    /// <summary>
    /// Tells the allocator that <paramref name="stream"/> uses <paramref name="t"/>'s memory too, as PyTorch's
    /// record_stream: when the block is freed, it is handed out again on its own stream only after the work that
    /// <paramref name="stream"/> had queued by then. Needed for every buffer that one stream writes and another reads.
    /// </summary>
    void RecordStream(Tensor t, int stream)
    {
    }

    // ---- data movement -------------------------------------------------------------------------

    /// <summary>Copies host floats into <paramref name="dst"/> (same element count).</summary>
    void CopyFromHost(ReadOnlySpan<float> src, Tensor dst);

    /// <summary>Copies <paramref name="src"/> to host floats (same element count); synchronises.</summary>
    void CopyToHost(Tensor src, Span<float> dst);

    /// <summary>Sets every element of <paramref name="dst"/> to <paramref name="value"/>.</summary>
    void Fill(Tensor dst, float value);

    /// <summary>
    /// y = x in y's element type (same element count): fp32 to bf16 rounds to nearest, ties to even, and keeps NaN a
    /// NaN; bf16 to fp32 is exact; the same type copies. The only op that reads or writes bf16 storage.
    /// </summary>
    void Cast(Tensor x, Tensor y);

    /// <summary>
    /// Copies <paramref name="rows"/> runs of <paramref name="cols"/> contiguous elements:
    /// dst[dstOffset + r*dstRowStride + c] = src[srcOffset + r*srcRowStride + c]. Offsets are in elements,
    /// relative to each tensor's own start. Used for concat, split and slicing along a middle dimension.
    /// </summary>
    void CopyRows(Tensor src, long srcOffset, long srcRowStride, Tensor dst, long dstOffset, long dstRowStride, int rows, int cols);

    /// <summary>
    /// Copies the tensors <paramref name="xs"/> into <paramref name="flat"/> one after another (<paramref name="gather"/>)
    /// or back out of it: a bucket of gradients moved, or reduced, as one buffer. flat holds at least their elements.
    /// The default copies tensor by tensor (<see cref="CopyRows"/>); a device does it in one launch.
    /// </summary>
    void CopyMulti(IReadOnlyList<Tensor> xs, Tensor flat, bool gather)
    {
        long offset = 0;
        foreach (var x in xs)
        {
            if (offset + x.Numel > flat.Numel)
            {
                throw new ShapeMismatchException("copy_multi", $"{xs.Count} tensors do not fit {flat.Describe()}.");
            }

            int n = checked((int)x.Numel);
            if (gather)
            {
                CopyRows(x, 0, n, flat, offset, n, 1, n);
            }
            else
            {
                CopyRows(flat, offset, n, x, 0, n, 1, n);
            }

            offset += n;
        }
    }

    /// <summary>y[b, j, i] = x[b, i, j] for x of shape [batch, rows, cols].</summary>
    void Transpose(int batch, int rows, int cols, Tensor x, Tensor y);

    // ---- elementwise ---------------------------------------------------------------------------

    /// <summary>y = alpha*a + beta*b, elementwise; y may be a or b (in-place accumulate).</summary>
    void Add(Tensor a, Tensor b, Tensor y, float alpha = 1f, float beta = 1f);

    /// <summary>y = a * b, elementwise.</summary>
    void Mul(Tensor a, Tensor b, Tensor y);

    /// <summary>y = alpha * x, elementwise; y may be x.</summary>
    void Scale(Tensor x, float alpha, Tensor y);

    /// <summary>
    /// y[o, c, i] = x[o, c, i] + bias[c] (or bias[o, c] when <paramref name="perOuter"/>) for x viewed as
    /// [outer, channels, inner]; y may be x.
    /// </summary>
    void AddChannelBias(int outer, int channels, int inner, Tensor x, Tensor bias, Tensor y, bool perOuter = false);

    /// <summary>dbias[c] = sum over o, i of dy[o, c, i] (or dbias[o, c] = sum over i when <paramref name="perOuter"/>).</summary>
    void ChannelBiasGrad(int outer, int channels, int inner, Tensor dy, Tensor dbias, bool perOuter = false);

    /// <summary>y = act(x), elementwise.</summary>
    void ActivationForward(Activation act, Tensor x, Tensor y);

    /// <summary>dx = dy * act'(x), elementwise.</summary>
    void ActivationBackward(Activation act, Tensor x, Tensor dy, Tensor dx);

    /// <summary>GEGLU on x [rows, 2*hidden]: y[r, j] = x[r, j] * gelu(x[r, hidden + j]), y [rows, hidden].</summary>
    void GegluForward(int rows, int hidden, Tensor x, Tensor y);

    /// <summary>Backward of <see cref="GegluForward"/>: dx [rows, 2*hidden] from x and dy [rows, hidden].</summary>
    void GegluBackward(int rows, int hidden, Tensor x, Tensor dy, Tensor dx);

    /// <summary>Row-wise softmax of x [rows, cols].</summary>
    void SoftmaxForward(int rows, int cols, Tensor x, Tensor y);

    /// <summary>dx = y * (dy - sum(dy * y)) row-wise.</summary>
    void SoftmaxBackward(int rows, int cols, Tensor y, Tensor dy, Tensor dx);

    // ---- linear algebra ------------------------------------------------------------------------

    /// <summary>
    /// Batched row-major GEMM: for each b, C_b = alpha * op(A_b) op(B_b) + beta * C_b, where op(A_b) is
    /// m x k, op(B_b) is k x n and C_b is m x n, all densely packed; A_b starts at b*StrideA (elements),
    /// likewise B and C. A stride of 0 shares one matrix across the batch.
    /// </summary>
    void Gemm(in GemmShape s, float alpha, Tensor a, Tensor b, float beta, Tensor c);

    /// <summary>
    /// One row-major product with a bias (a linear layer's forward): C = alpha * op(A) op(B) + bias, the bias [N] added
    /// to every row of C [M, N]. <paramref name="s"/>.Batch must be 1. The default is <see cref="Gemm"/> then
    /// <see cref="AddChannelBias"/>; the CUDA backend can fuse both into one cuBLASLt call.
    /// </summary>
    void GemmBias(in GemmShape s, float alpha, Tensor a, Tensor b, Tensor bias, Tensor c) => SeparateGemmBias(this, s, alpha, a, b, bias, c);

    /// <summary>
    /// One row-major product C = alpha * op(A) op(B) and the sums of op(A)'s rows, sums[i] = sum over k of op(A)[i, k],
    /// unscaled (a linear layer's weight gradient beside its bias gradient: op(A) = dy^T). <paramref name="s"/>.Batch
    /// must be 1. The default is <see cref="Gemm"/> then <see cref="ChannelBiasGrad"/>; the CUDA backend can fuse both
    /// into one cuBLASLt call.
    /// </summary>
    void GemmRowSums(in GemmShape s, float alpha, Tensor a, Tensor b, Tensor c, Tensor sums) => SeparateGemmRowSums(this, s, alpha, a, b, c, sums);

    /// <summary><see cref="GemmBias"/> as two calls on <paramref name="backend"/>: the default, and a fusing backend's fallback.</summary>
    static void SeparateGemmBias(IBackend backend, in GemmShape s, float alpha, Tensor a, Tensor b, Tensor bias, Tensor c)
    {
        backend.Gemm(s, alpha, a, b, 0f, c);
        backend.AddChannelBias(s.M, s.N, 1, c, bias, c);
    }

    /// <summary><see cref="GemmRowSums"/> as two calls on <paramref name="backend"/>: the default, and a fusing backend's fallback.</summary>
    static void SeparateGemmRowSums(IBackend backend, in GemmShape s, float alpha, Tensor a, Tensor b, Tensor c, Tensor sums)
    {
        backend.Gemm(s, alpha, a, b, 0f, c);
        if (s.TransA)
        {
            backend.ChannelBiasGrad(s.K, s.M, 1, a, sums); // a is [K, M]: column sums
        }
        else
        {
            backend.ChannelBiasGrad(1, s.M, s.K, a, sums); // a is [M, K]: row sums
        }
    }

    // ---- convolution ---------------------------------------------------------------------------

    /// <summary>NCHW 2-D convolution, weights [Cout, Cin, K, K], optional bias [Cout].</summary>
    void Conv2dForward(in Conv2dShape s, Tensor x, Tensor w, Tensor? bias, Tensor y);

    /// <summary>dx = conv2d input-gradient of dy with weights w.</summary>
    void Conv2dBackwardData(in Conv2dShape s, Tensor dy, Tensor w, Tensor dx);

    /// <summary>dw (and dbias when given) from x and dy.</summary>
    void Conv2dBackwardFilter(in Conv2dShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias);

    /// <summary>
    /// Temporal convolution along frames: x [B, F, Cin, S], w [Cout, Cin, 3], bias [Cout],
    /// y[b, f, o, s] = bias[o] + sum over i, k of w[o, i, k] * x[b, f + k - 1, i, s] (zero outside 0..F-1).
    /// </summary>
    void TemporalConvForward(in TemporalConvShape s, Tensor x, Tensor w, Tensor? bias, Tensor y);

    /// <summary>dx of <see cref="TemporalConvForward"/>.</summary>
    void TemporalConvBackwardData(in TemporalConvShape s, Tensor dy, Tensor w, Tensor dx);

    /// <summary>dw (and dbias when given) of <see cref="TemporalConvForward"/>.</summary>
    void TemporalConvBackwardWeight(in TemporalConvShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias);

    // ---- normalisation -------------------------------------------------------------------------

    /// <summary>
    /// Group norm of x viewed as [N, T, C, S]: statistics per (n, group) over T x (C/G) x S, then
    /// y = (x - mean) * rstd * gamma[c] + beta[c], followed by SiLU when <paramref name="silu"/>.
    /// Writes mean and rstd [N, G]. T = 1 is the per-image norm of spatial layers; T = frames is the
    /// norm over a whole clip that temporal layers use.
    /// </summary>
    void GroupNormForward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, bool silu);

    /// <summary>
    /// Backward of <see cref="GroupNormForward"/>; any of dx, dgamma, dbeta may be null. With <paramref name="dxAddend"/>
    /// (x's shape, another tensor than dx) dx receives the input gradient plus it, each element rounded once as adding
    /// afterwards rounds it: the gradient x already has from its other consumers (a residual's skip), added in the same pass.
    /// </summary>
    void GroupNormBackward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor mean, Tensor rstd, Tensor dy,
        Tensor? dx, Tensor? dgamma, Tensor? dbeta, bool silu, Tensor? dxAddend = null);

    /// <summary>Layer norm over the last dimension of x [rows, cols]; writes mean and rstd [rows].</summary>
    void LayerNormForward(int rows, int cols, float eps, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd);

    /// <summary>Backward of <see cref="LayerNormForward"/>; any of dx, dgamma, dbeta may be null; <paramref name="dxAddend"/> as in <see cref="GroupNormBackward"/>.</summary>
    void LayerNormBackward(int rows, int cols, Tensor x, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
        Tensor? dx, Tensor? dgamma, Tensor? dbeta, Tensor? dxAddend = null);

    // ---- attention -----------------------------------------------------------------------------

    /// <summary>
    /// Multi-head attention: q [N, Lq, H*D], k and v [N, Lk, H*D], o [N, Lq, H*D],
    /// o = softmax(scale * q k^T) v per (n, head); lse [N, H, Lq] receives the log-sum-exp of the
    /// scaled scores, which is all backward needs besides q, k, v, o (no Lq x Lk matrix is kept).
    /// </summary>
    void AttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse);

    /// <summary>
    /// Backward of <see cref="AttentionForward"/>; writes dq, dk, dv. With <paramref name="o"/> and
    /// <paramref name="lse"/> null it recomputes the probabilities from q and k alone and takes Drow = rowsum(P dP)
    /// instead of rowsum(dO o): the exact gradient of attention at the q, k, v given, even when those are a rounded
    /// copy of the forward's (activations kept narrower: docs/ops.md).
    /// </summary>
    void AttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv);

    /// <summary>
    /// Self-attention over the frames of each pixel: the same contract as <see cref="AttentionForward"/>
    /// with Lq = Lk = F (at most 32) and N = batch x pixels; device backends run a dedicated kernel.
    /// </summary>
    void TemporalAttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse);

    /// <summary>Backward of <see cref="TemporalAttentionForward"/>; o and lse may be null, as in <see cref="AttentionBackward"/>.</summary>
    void TemporalAttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv);

    // ---- resampling ----------------------------------------------------------------------------

    /// <summary>2x2 average pool of x [planes, H, W] (H, W even) into y [planes, H/2, W/2].</summary>
    void AvgPool2x2Forward(int planes, int h, int w, Tensor x, Tensor y);

    /// <summary>dx [planes, H, W] = dy [planes, H/2, W/2] / 4 spread over each 2x2 window.</summary>
    void AvgPool2x2Backward(int planes, int h, int w, Tensor dy, Tensor dx);

    /// <summary>Nearest x2 upsample of x [planes, H, W] into y [planes, 2H, 2W].</summary>
    void Upsample2xForward(int planes, int h, int w, Tensor x, Tensor y);

    /// <summary>dx [planes, H, W] = sum of dy [planes, 2H, 2W] over each 2x2 window.</summary>
    void Upsample2xBackward(int planes, int h, int w, Tensor dy, Tensor dx);

    // ---- embedding -----------------------------------------------------------------------------

    /// <summary>y[r, :] = table[ids[r], :] for table [V, D] and y [ids.Length, D].</summary>
    void EmbeddingForward(ReadOnlySpan<int> ids, Tensor table, Tensor y);

    /// <summary>dtable[ids[r], :] += dy[r, :]; dtable must be zeroed by the caller.</summary>
    void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dy, Tensor dtable);

    // ---- losses, reductions, optimiser ---------------------------------------------------------

    /// <summary>out[0] = mean((a - b)^2).</summary>
    void MseForward(Tensor a, Tensor b, Tensor output);

    /// <summary>da = dOut[0] * 2 (a - b) / n; dOut is a one-element tensor (no host round trip).</summary>
    void MseBackward(Tensor a, Tensor b, Tensor dOut, Tensor da);

    /// <summary>output[0] = sum of x (float accumulation in double on the host backends).</summary>
    void Sum(Tensor x, Tensor output);

    /// <summary>output[0] += sum of x^2, the building block of the global gradient norm.</summary>
    void SumSquaresAccumulate(Tensor x, Tensor output);

    /// <summary>
    /// One fused AdamW step on a parameter, its gradient and its two moment buffers. The moments are fp32, or both
    /// bf16 (`--optimizer-state bf16`): updated in fp32 and stored by stochastic rounding, the random bits a hash of
    /// the step, <see cref="AdamWStepArgs.Tensor"/> and the element's index (docs/ops.md).
    /// </summary>
    void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWStepArgs args);

    /// <summary>
    /// Kernel launches and library calls by name since the backend opened or <see cref="ResetCallCounts"/>, on a
    /// backend that counts them (the CUDA backend); null on one that does not (the host backends issue none).
    /// </summary>
    IReadOnlyDictionary<string, long>? CallCounts => null;

    /// <summary>Starts <see cref="CallCounts"/> (and <see cref="CallMilliseconds"/>) again from zero.</summary>
    void ResetCallCounts()
    {
    }

    /// <summary>
    /// Times every kernel launch and library call on the device, by name, until the returned scope is disposed: a pair of
    /// device events around each call (a few microseconds of host time per call, so time such steps apart from others).
    /// Null on a backend that issues no calls to time (the host backends).
    /// </summary>
    IDisposable? TimeCalls() => null;

    /// <summary>
    /// Device milliseconds by call name, summed over the calls timed (<see cref="TimeCalls"/>) since the backend opened or
    /// <see cref="ResetCallCounts"/>; null on a backend that does not time calls. Reading it waits for the calls timed so far.
    /// </summary>
    IReadOnlyDictionary<string, double>? CallMilliseconds => null;

    /// <summary>
    /// output[0] += sum of x^2 over every tensor of <paramref name="xs"/>: the global gradient norm. A device
    /// backend does it in one launch rather than one per tensor (the summation order may then differ from
    /// calling <see cref="SumSquaresAccumulate(Tensor, Tensor)"/> on each); this default does exactly that.
    /// </summary>
    void SumSquaresAccumulate(IReadOnlyList<Tensor> xs, Tensor output)
    {
        foreach (var x in xs)
        {
            SumSquaresAccumulate(x, output);
        }
    }

    /// <summary>
    /// One AdamW step on every parameter of <paramref name="tensors"/>, element by element the same arithmetic as
    /// <see cref="AdamWStep(Tensor, Tensor, Tensor, Tensor, in AdamWStepArgs)"/> (so the same bits). A device
    /// backend does it in one launch; this default steps them one by one.
    /// </summary>
    void AdamWStep(IReadOnlyList<AdamWTensors> tensors, in AdamWStepArgs args)
    {
        for (int k = 0; k < tensors.Count; k++)
        {
            var t = tensors[k];
            AdamWStep(t.Param, t.Grad, t.M, t.V, args with { Tensor = k });
        }
    }
}

/// <summary>A parameter, its gradient and its two AdamW moment buffers (same shape, one backend; the moments fp32 or both bf16).</summary>
public readonly record struct AdamWTensors(Tensor Param, Tensor Grad, Tensor M, Tensor V);

/// <summary>Pointwise activation functions.</summary>
public enum Activation
{
    /// <summary>x * sigmoid(x).</summary>
    Silu,

    /// <summary>The tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).</summary>
    Gelu,
}

/// <summary>Shape of a batched row-major GEMM; see <see cref="IBackend.Gemm"/>.</summary>
public readonly record struct GemmShape(int M, int N, int K, bool TransA = false, bool TransB = false,
    int Batch = 1, long StrideA = 0, long StrideB = 0, long StrideC = 0)
{
    /// <summary>Floating-point operations of the whole batched product.</summary>
    public double Flops => 2.0 * M * N * K * Batch;
}

/// <summary>Shape of an NCHW convolution with square kernel.</summary>
public readonly record struct Conv2dShape(int N, int Cin, int H, int W, int Cout, int Kernel, int Stride, int Pad)
{
    /// <summary>Output height.</summary>
    public int OutH => (H + 2 * Pad - Kernel) / Stride + 1;

    /// <summary>Output width.</summary>
    public int OutW => (W + 2 * Pad - Kernel) / Stride + 1;

    /// <summary>Floating-point operations of the forward pass.</summary>
    public double Flops => 2.0 * N * Cout * OutH * OutW * Cin * Kernel * Kernel;
}

/// <summary>Shape of a temporal convolution over x [B, F, Cin, S] with kernel 3 along F.</summary>
public readonly record struct TemporalConvShape(int B, int F, int Cin, int Cout, int S)
{
    /// <summary>Floating-point operations of the forward pass.</summary>
    public double Flops => 2.0 * B * F * S * Cout * Cin * 3;
}

/// <summary>Shape of a group norm over x viewed as [N, T, C, S].</summary>
public readonly record struct GroupNormShape(int N, int T, int C, int S, int Groups, float Eps = 1e-5f)
{
    /// <summary>Elements that share one (n, group) statistic.</summary>
    public long GroupSize => (long)T * (C / Groups) * S;
}

/// <summary>Shape of multi-head attention; see <see cref="IBackend.AttentionForward"/>.</summary>
public readonly record struct AttentionShape(int N, int Heads, int Lq, int Lk, int HeadDim, float Scale)
{
    /// <summary>Model width H * D.</summary>
    public int Width => Heads * HeadDim;
}

/// <summary>Arguments of one AdamW step (decoupled weight decay, bias-corrected moments).</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Beta1">First-moment decay.</param>
/// <param name="Beta2">Second-moment decay.</param>
/// <param name="Eps">Denominator epsilon.</param>
/// <param name="WeightDecay">Decoupled weight decay (multiplies lr).</param>
/// <param name="Step">1-based step number, for bias correction.</param>
/// <param name="GradScale">Multiplies the gradient before use (gradient clipping).</param>
/// <param name="Tensor">The tensor's place in the optimiser's list: with bf16 moments, part of the stochastic rounding's hash.</param>
public readonly record struct AdamWStepArgs(float Lr, float Beta1, float Beta2, float Eps, float WeightDecay, int Step, float GradScale = 1f, int Tensor = 0);
