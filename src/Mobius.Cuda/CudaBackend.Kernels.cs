using System.Runtime.InteropServices;
using Mobius.Cuda.Interop;
using Mobius.Engine;

namespace Mobius.Cuda;

/// <summary>
/// Every op that is not a GEMM or a spatial convolution runs on our PTX kernels (kernels/*.cu; launch
/// shapes as kernels/README.md gives them). Grid-stride kernels get at most 16 blocks per SM: enough to
/// fill the device, few enough that a block does real work.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private const uint Block = 256;
    private readonly Dictionary<string, KernelModule> _entries = new();
    private readonly List<KernelModule> _modules = new();

    private void LoadKernels()
    {
        foreach (var (ptx, name) in KernelModule.Embedded(Device.Major, Device.Minor))
        {
            var module = new KernelModule(ptx, name);
            _modules.Add(module);
            foreach (var entry in KernelModule.Entries(ptx))
            {
                _entries[entry] = module;
            }
        }
    }

    private void UnloadKernels()
    {
        foreach (var m in _modules)
        {
            m.Dispose();
        }

        _modules.Clear();
        _entries.Clear();
    }

    /// <summary>The kernel entry points loaded, for `mobius info` and profiling.</summary>
    public IReadOnlyCollection<string> KernelNames => _entries.Keys;

    /// <summary>Launches a kernel by entry name on the backend's stream.</summary>
    public void Launch(string entry, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedBytes, ReadOnlySpan<KernelArg> args)
    {
        MakeCurrent();
        if (!_entries.TryGetValue(entry, out var module))
        {
            throw new InvalidOperationException($"no kernel named {entry} in the loaded PTX.");
        }

        using (Call(entry))
        {
            module.Launch(entry, grid, block, sharedBytes, _lane.Stream, args);
        }
    }

    private readonly Dictionary<string, long> _calls = new();

    /// <summary>
    /// Kernel launches (by entry) and cuBLAS and cuDNN calls (by function) since the backend opened or
    /// <see cref="ResetCallCounts"/>: what a step issues. Where a step is launch-bound (a small model), the
    /// host's cost per call, not the arithmetic, sets its time.
    /// </summary>
    public IReadOnlyDictionary<string, long> CallCounts => _calls;

    /// <summary>Starts <see cref="CallCounts"/> and <see cref="CallMilliseconds"/> again from zero.</summary>
    public void ResetCallCounts()
    {
        _calls.Clear();
        _callTimer?.Collect();
        _callMs.Clear();
        _callsTimed.Clear();
    }

    private void Count(string name) => CollectionsMarshal.GetValueRefOrAddDefault(_calls, name, out _)++;

    private void Launch1D(string entry, long work, ReadOnlySpan<KernelArg> args, uint block = Block) =>
        Launch(entry, (GridFor(work, block), 1, 1), (block, 1, 1), 0, args);

    /// <summary>Blocks for a grid-stride loop over <paramref name="work"/> items.</summary>
    private uint GridFor(long work, uint block) => (uint)Math.Clamp((work + block - 1) / block, 1, 16L * Device.Multiprocessors);

    private Tensor Scratch(long floats) => Tensor.Empty(this, WorkspaceShape(Math.Max(1, floats)), MemoryCategory.Workspace);

    /// <summary>
    /// A shape of at least <paramref name="floats"/> elements for a workspace buffer: one dimension while that
    /// fits an int, else rows of 2^20 (rounded up; a shape's dimensions are ints, its element count is not).
    /// </summary>
    internal static Shape WorkspaceShape(long floats) =>
        floats <= int.MaxValue ? new Shape((int)floats) : new Shape(checked((int)((floats + (1 << 20) - 1) >> 20)), 1 << 20);

    // ---- data movement and elementwise -----------------------------------------------------------

    /// <inheritdoc />
    public void CopyRows(Tensor src, long srcOffset, long srcRowStride, Tensor dst, long dstOffset, long dstRowStride, int rows, int cols) =>
        Launch("copy_rows_f32", (ColumnBlocks(cols), (uint)Math.Min(rows, 65535), 1), (Block, 1, 1), 0,
            [Ptr(src), srcOffset, srcRowStride, Ptr(dst), dstOffset, dstRowStride, rows, cols]);

    /// <inheritdoc />
    public void Transpose(int batch, int rows, int cols, Tensor x, Tensor y) =>
        Launch("transpose_f32", ((uint)((cols + 31) / 32), (uint)Math.Min((rows + 31) / 32, 65535), (uint)Math.Min(batch, 65535)), (32, 8, 1), 0,
            [Ptr(x), Ptr(y), batch, rows, cols]);

    /// <inheritdoc />
    public void Add(Tensor a, Tensor b, Tensor y, float alpha = 1f, float beta = 1f) =>
        Launch1D("ew_add_f32", y.Numel, [Ptr(a), Ptr(b), Ptr(y), y.Numel, alpha, beta]);

    /// <inheritdoc />
    public void Mul(Tensor a, Tensor b, Tensor y) => Launch1D("ew_mul_f32", y.Numel, [Ptr(a), Ptr(b), Ptr(y), y.Numel]);

    /// <inheritdoc />
    public void Scale(Tensor x, float alpha, Tensor y) => Launch1D("ew_scale_f32", y.Numel, [Ptr(x), Ptr(y), y.Numel, alpha]);

    /// <inheritdoc />
    public void AddChannelBias(int outer, int channels, int inner, Tensor x, Tensor bias, Tensor y, bool perOuter = false) =>
        Launch1D("add_channel_bias_f32", y.Numel, [Ptr(x), Ptr(bias), Ptr(y), (long)outer, channels, (long)inner, perOuter ? 1 : 0]);

    /// <inheritdoc />
    public void ChannelBiasGrad(int outer, int channels, int inner, Tensor dy, Tensor dbias, bool perOuter = false)
    {
        long outputs = perOuter ? (long)outer * channels : channels;
        uint block = inner >= 256 || (!perOuter && (long)outer * inner >= 256) ? 256u : 32u;
        Launch("channel_bias_grad_f32", ((uint)Math.Min(outputs, 65535), 1, 1), (block, 1, 1), 0,
            [Ptr(dy), Ptr(dbias), (long)outer, channels, (long)inner, perOuter ? 1 : 0]);
    }

    /// <inheritdoc />
    public void ActivationForward(Activation act, Tensor x, Tensor y) =>
        Launch1D(act == Activation.Silu ? "silu_fwd_f32" : "gelu_fwd_f32", y.Numel, [Ptr(x), Ptr(y), y.Numel]);

    /// <inheritdoc />
    public void ActivationBackward(Activation act, Tensor x, Tensor dy, Tensor dx) =>
        Launch1D(act == Activation.Silu ? "silu_bwd_f32" : "gelu_bwd_f32", dx.Numel, [Ptr(x), Ptr(dy), Ptr(dx), dx.Numel]);

    /// <inheritdoc />
    public void GegluForward(int rows, int hidden, Tensor x, Tensor y) =>
        Launch1D("geglu_fwd_f32", y.Numel, [Ptr(x), Ptr(y), (long)rows, hidden]);

    /// <inheritdoc />
    public void GegluBackward(int rows, int hidden, Tensor x, Tensor dy, Tensor dx) =>
        Launch1D("geglu_bwd_f32", dy.Numel, [Ptr(x), Ptr(dy), Ptr(dx), (long)rows, hidden]);

    /// <inheritdoc />
    public void SoftmaxForward(int rows, int cols, Tensor x, Tensor y) => Softmax(Ptr(x), Ptr(y), 0, rows, cols);

    /// <inheritdoc />
    public void SoftmaxBackward(int rows, int cols, Tensor y, Tensor dy, Tensor dx) =>
        Launch1D("softmax_bwd_f32", rows * 32L, [Ptr(y), Ptr(dy), Ptr(dx), (long)rows, cols]);

    /// <summary>One warp per row: 8 rows per 256-thread block.</summary>
    private void Softmax(ulong x, ulong y, ulong lse, long rows, int cols) =>
        Launch1D("softmax_fwd_f32", rows * 32, [x, y, lse, rows, cols]);

    // ---- temporal convolution ------------------------------------------------------------------

    /// <summary>
    /// Forces the temporal convolution's tile width (64 or 128) when set; null chooses by shape. Tests set it
    /// to reach both kernels on small shapes.
    /// </summary>
    internal int? TemporalConvTileOverride { get; set; }

    /// <summary>
    /// 128x128 tiles do twice the multiply-adds per shared-memory read of 64x64 ones but make a quarter as many
    /// blocks: taken when they still give every SM a block.
    /// </summary>
    internal int TemporalConvTile(long columns, int rows) =>
        TemporalConvTileOverride ?? (TilesOf(columns, 128) * TilesOf(rows, 128) >= Device.Multiprocessors ? 128 : 64);

    /// <summary>The weight gradient splits its reduction to fill the device, so wide tiles pay whenever they are mostly full.</summary>
    internal int TemporalConvWeightTile(int cin, int cout) => TemporalConvTileOverride ?? (3 * cin >= 128 && cout >= 128 ? 128 : 64);

    private static uint TilesOf(long n, int width) => (uint)((n + width - 1) / width);

    private static string ConvEntry(string name, int tile) => tile == 128 ? $"temporal_conv_{name}_128_f32" : $"temporal_conv_{name}_f32";

    /// <summary>
    /// Where the temporal convolution runs: on cuBLAS (true) or our kernels (false), or (null, the default) on cuBLAS
    /// where a pass has at least <see cref="TemporalConvCublasMinFlops"/>, in every math mode (<see cref="TensorCores"/>),
    /// and on our kernels otherwise. On cuBLAS, forward and backward data are GEMMs over three-frame windows and the
    /// weight gradient three GEMMs over channel-major copies of the input and the output gradient: about ten calls where
    /// our kernels take one or two, which a small convolution, bound by its launches, does not repay. Same results
    /// within fp32 rounding (another summation order). MOBIUS_TEMPORAL_CONV=kernel or gemm (read when the backend opens)
    /// or this setter fixes it. Measured on an H200 (benchmarks/results/2026-11-28-h200.md): at ms256 in strict fp32,
    /// cuBLAS's SGEMMs take a step from 479 to 435 ms (serial) and 361 to 316 ms (parallel); our kernels reach 21
    /// TFLOP/s at the first level, the SGEMMs 25 to 37.
    /// </summary>
    public bool? TemporalConvOnCublas { get; set; } = TemporalConvSetting(Environment.GetEnvironmentVariable("MOBIUS_TEMPORAL_CONV"));

    /// <summary>
    /// Smallest pass (forward FLOPs, 2 B F S Cout Cin 3) that the default takes to cuBLAS: every ms256 level (2.5 to 10
    /// GFLOP) and none of tiny's, whose convolutions are bound by their launches.
    /// </summary>
    internal double TemporalConvCublasMinFlops { get; set; } = 1e9;

    /// <summary>Whether this shape's temporal convolution runs on cuBLAS (<see cref="TemporalConvOnCublas"/>).</summary>
    internal bool CublasTemporalConv(in TemporalConvShape s) =>
        TemporalConvOnCublas ?? s.Flops >= TemporalConvCublasMinFlops;

    internal static bool? TemporalConvSetting(string? value) => value switch
    {
        null or "" => null,
        "kernel" => false,
        "gemm" => true,
        var other => throw new ArgumentException($"MOBIUS_TEMPORAL_CONV={other}: expected kernel (our kernels; the default below 1 GFLOP a pass) or gemm (cuBLAS; the default from 1 GFLOP)."),
    };

    /// <summary>
    /// Scratch the cuBLAS weight gradient of the temporal convolution may hold for its channel-major copies of x and
    /// dy; larger batches run in chunks of clips that fit (at least one clip each).
    /// </summary>
    internal long TemporalConvScratchBytes { get; set; } = 256L << 20;

    /// <summary>
    /// output_f [M, S] = taps [M, 3 K] input_{f-1..f+1} [3 K, S] for every frame of B clips of F frames, zero past a
    /// clip's ends: one strided-batched GEMM over every frame of the flattened B*F with a whole window (which also
    /// writes the frames at clip edges, wrongly), then one over the clips for their first frames (taps 1, 2) and
    /// one for their last (taps 0, 1), which rewrite them.
    /// </summary>
    private void FrameWindowGemms(ulong input, ulong taps, ulong output, int b, int f, int k, int m, int s)
    {
        ulong inFrame = (ulong)k * (ulong)s * 4, outFrame = (ulong)m * (ulong)s * 4;
        void Gemm(ulong a, int depth, ulong window, ulong c, long frameStride, int count)
        {
            if (count > 0)
            {
                GemmRowMajor(false, false, m, s, depth, 1f, a, 3 * k, 0, window, s, frameStride * k * s, 0f, c, s, frameStride * m * s, count);
            }
        }

        Gemm(taps, 3 * k, input, output + outFrame, 1, b * f - 2);
        Gemm(taps + (ulong)k * 4, f > 1 ? 2 * k : k, input, output, f, b);
        if (f > 1)
        {
            Gemm(taps, 2 * k, input + (ulong)(f - 2) * inFrame, output + (ulong)(f - 1) * outFrame, f, b);
        }
    }

    private Tensor Taps(Tensor w, in TemporalConvShape s, bool reverse)
    {
        var taps = Scratch(3L * s.Cin * s.Cout);
        Launch1D("temporal_conv_taps_f32", 3L * s.Cin * s.Cout, [Ptr(w), Ptr(taps), s.Cin, s.Cout, reverse ? 1 : 0]);
        return taps;
    }

    /// <inheritdoc />
    public void TemporalConvForward(in TemporalConvShape s, Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        if (CublasTemporalConv(s))
        {
            using var taps = Taps(w, s, reverse: false);
            FrameWindowGemms(Ptr(x), Ptr(taps), Ptr(y), s.B, s.F, s.Cin, s.Cout, s.S);
            if (bias is not null)
            {
                AddChannelBias(s.B * s.F, s.Cout, s.S, y, bias, y);
            }

            return;
        }

        long columns = (long)s.B * s.F * s.S;
        int tile = TemporalConvTile(columns, s.Cout);
        Launch(ConvEntry("fwd", tile), (TilesOf(columns, tile), TilesOf(s.Cout, tile), 1), (256, 1, 1), 0,
            [Ptr(x), Ptr(w), bias is null ? 0UL : Ptr(bias), Ptr(y), s.B, s.F, s.Cin, s.Cout, s.S]);
    }

    /// <inheritdoc />
    public void TemporalConvBackwardData(in TemporalConvShape s, Tensor dy, Tensor w, Tensor dx)
    {
        if (CublasTemporalConv(s))
        {
            using var taps = Taps(w, s, reverse: true);
            FrameWindowGemms(Ptr(dy), Ptr(taps), Ptr(dx), s.B, s.F, s.Cout, s.Cin, s.S);
            return;
        }

        long columns = (long)s.B * s.F * s.S;
        int tile = TemporalConvTile(columns, s.Cin);
        Launch(ConvEntry("bwd_data", tile), (TilesOf(columns, tile), TilesOf(s.Cin, tile), 1), (256, 1, 1), 0,
            [Ptr(dy), Ptr(w), Ptr(dx), s.B, s.F, s.Cin, s.Cout, s.S]);
    }

    /// <inheritdoc />
    public void TemporalConvBackwardWeight(in TemporalConvShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias)
    {
        if (CublasTemporalConv(s))
        {
            WeightGradientGemms(s, x, dy, dw);
        }
        else
        {
            WeightGradientKernel(s, x, dy, dw);
        }

        if (dbias is not null)
        {
            ChannelBiasGrad(s.B * s.F, s.Cout, s.S, dy, dbias);
        }
    }

    /// <summary>dw on our split-K kernel: the B*F*S reduction split so that the weight tiles fill the device, partials summed after.</summary>
    private void WeightGradientKernel(in TemporalConvShape s, Tensor x, Tensor dy, Tensor dw)
    {
        long columns = (long)s.B * s.F * s.S;
        int tile = TemporalConvWeightTile(s.Cin, s.Cout);
        uint tiles = TilesOf(3L * s.Cin, tile) * TilesOf(s.Cout, tile);
        int splits = (int)Math.Clamp(2L * Device.Multiprocessors / tiles, 1, Math.Max(1, columns / 256));
        long perSplit = (columns + splits - 1) / splits;
        long weights = (long)s.Cout * s.Cin * 3;
        using var partial = splits > 1 ? Scratch(splits * weights) : null;
        Launch(ConvEntry("bwd_weight", tile), (TilesOf(3L * s.Cin, tile), TilesOf(s.Cout, tile), (uint)splits), (256, 1, 1), 0,
            [Ptr(x), Ptr(dy), partial is null ? Ptr(dw) : Ptr(partial), s.B, s.F, s.Cin, s.Cout, s.S, perSplit]);
        if (partial is not null)
        {
            ColumnSum(Ptr(partial), Ptr(dw), splits, (int)weights, splits);
        }
    }

    /// <summary>
    /// dw [Cout, Cin, 3] on cuBLAS. In the channel-major layout [C, F, B, S] (temporal_conv_channel_major_f32) every
    /// channel is one row whose frame f+1 lies B*S columns after frame f of the same clip, so tap t (output frame f
    /// against input frame f+t-1) is one GEMM over the columns where both exist: taps[o, t Cin + i] = sum over those
    /// columns of dy'[o, n] x'[i, n + (t-1) B S]. Chunks of clips accumulate (beta 1 after the first).
    /// </summary>
    private void WeightGradientGemms(in TemporalConvShape s, Tensor x, Tensor dy, Tensor dw)
    {
        long clipFloats = (long)s.F * s.S * (s.Cin + s.Cout);
        int chunk = (int)Math.Clamp(TemporalConvScratchBytes / 4 / clipFloats, 1, s.B);
        using var taps = Scratch(3L * s.Cin * s.Cout);
        using var xt = Scratch((long)chunk * s.F * s.Cin * s.S);
        using var dyt = Scratch((long)chunk * s.F * s.Cout * s.S);
        if (s.F == 1)
        {
            Fill(taps, 0f); // a clip of one frame has no neighbours: taps 0 and 2 stay zero
        }

        ulong tap = (ulong)s.Cin * 4;
        for (int b0 = 0; b0 < s.B; b0 += chunk)
        {
            int n = Math.Min(chunk, s.B - b0);
            Launch1D("temporal_conv_channel_major_f32", (long)n * s.F * s.Cin * s.S,
                [Ptr(x) + (ulong)b0 * (ulong)s.F * (ulong)s.Cin * (ulong)s.S * 4, Ptr(xt), n, s.F, s.Cin, s.S]);
            Launch1D("temporal_conv_channel_major_f32", (long)n * s.F * s.Cout * s.S,
                [Ptr(dy) + (ulong)b0 * (ulong)s.F * (ulong)s.Cout * (ulong)s.S * 4, Ptr(dyt), n, s.F, s.Cout, s.S]);
            int columns = checked(n * s.F * s.S), shift = n * s.S;
            float beta = b0 == 0 ? 0f : 1f;
            GemmRowMajor(false, true, s.Cout, s.Cin, columns, 1f, Ptr(dyt), columns, 0, Ptr(xt), columns, 0, beta, Ptr(taps) + tap, 3 * s.Cin, 0, 1);
            if (s.F > 1)
            {
                ulong shifted = (ulong)shift * 4;
                GemmRowMajor(false, true, s.Cout, s.Cin, columns - shift, 1f, Ptr(dyt) + shifted, columns, 0, Ptr(xt), columns, 0, beta, Ptr(taps), 3 * s.Cin, 0, 1);
                GemmRowMajor(false, true, s.Cout, s.Cin, columns - shift, 1f, Ptr(dyt), columns, 0, Ptr(xt) + shifted, columns, 0, beta, Ptr(taps) + 2 * tap, 3 * s.Cin, 0, 1);
            }
        }

        Launch1D("temporal_conv_taps_to_weight_f32", 3L * s.Cin * s.Cout, [Ptr(taps), Ptr(dw), s.Cin, s.Cout]);
    }

    /// <summary>dst[s, j] = sum of src[r, j] over each split of <paramref name="rowsPerSplit"/> rows.</summary>
    private void ColumnSum(ulong src, ulong dst, long rows, int cols, long rowsPerSplit) =>
        Launch("column_sum_f32", (ColumnBlocks(cols), (uint)((rows + rowsPerSplit - 1) / rowsPerSplit), 1), (Block, 1, 1), 0,
            [src, dst, rows, cols, rowsPerSplit]);

    /// <summary>Blocks of <see cref="Block"/> threads over <paramref name="cols"/> columns, at most 65,535 (the column kernels stride).</summary>
    private static uint ColumnBlocks(int cols) => (uint)Math.Min((cols + Block - 1) / Block, 65535);

    /// <summary>
    /// A norm's gamma and beta gradients from their per-row partials [rows, cols] (rows summed whole): one launch
    /// for both where both are wanted, else one for the one that is.
    /// </summary>
    private void ParameterSums(Tensor? gammaPartial, Tensor? gamma, Tensor? betaPartial, Tensor? beta, long rows, int cols)
    {
        if (gammaPartial is not null && betaPartial is not null)
        {
            Launch("column_sum_pair_f32", (ColumnBlocks(cols), 1, 2), (Block, 1, 1), 0,
                [Ptr(gammaPartial), Ptr(gamma!), Ptr(betaPartial), Ptr(beta!), rows, cols, rows]);
        }
        else if (gammaPartial is not null)
        {
            ColumnSum(Ptr(gammaPartial), Ptr(gamma!), rows, cols, rows);
        }
        else if (betaPartial is not null)
        {
            ColumnSum(Ptr(betaPartial), Ptr(beta!), rows, cols, rows);
        }
    }

    // ---- norms ---------------------------------------------------------------------------------------

    /// <summary>
    /// Blocks the group-norm kernels aim for: a video norm at batch 1 has only G groups (32), so each group's
    /// elements are cut into chunks until about this many blocks run. Tests lower the chunk size to reach the
    /// split path on small shapes.
    /// </summary>
    internal int GroupNormTargetBlocks => 4 * Device.Multiprocessors;

    /// <summary>
    /// Where each group is one chunk, the forward runs statistics and normalisation in one launch
    /// (group_norm_one_pass_f32), and where each channel is one chunk too, the backward its two passes
    /// (group_norm_bwd_one_pass_f32): the same bits as two launches. Tests turn it off to compare.
    /// </summary>
    internal bool GroupNormOnePass { get; set; } = true;

    /// <summary>Fewest elements a group-norm chunk takes (below that a block has too little to do).</summary>
    internal int GroupNormMinChunk { get; set; } = 4096;

    /// <summary>Chunks per reduction unit: enough units x chunks to fill the device, none under the minimum chunk.</summary>
    internal int GroupNormSplits(long units, long elementsPerUnit)
    {
        long wanted = (GroupNormTargetBlocks + units - 1) / units;
        long most = Math.Max(1, elementsPerUnit / GroupNormMinChunk);
        return (int)Math.Clamp(wanted, 1, Math.Min(most, 1024));
    }

    private static uint GridY(long units) => (uint)Math.Min(units, 65535);

    /// <inheritdoc />
    public void GroupNormForward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, bool silu)
    {
        long groups = (long)s.N * s.Groups;
        int splits = GroupNormSplits(groups, (long)s.T * (s.C / s.Groups) * s.S);
        if (splits == 1 && GroupNormOnePass)
        {
            Launch("group_norm_one_pass_f32", (1, GridY(groups), 1), (256, 1, 1), 0,
                [Ptr(x), Ptr(gamma), Ptr(beta), Ptr(y), Ptr(mean), Ptr(rstd), s.N, s.T, s.C, s.S, s.Groups, s.Eps, silu ? 1 : 0]);
            return;
        }

        using var stats = Scratch(groups * splits * 2);
        Launch("group_norm_stats_f32", ((uint)splits, GridY(groups), 1), (256, 1, 1), 0,
            [Ptr(x), Ptr(stats), s.N, s.T, s.C, s.S, s.Groups, splits]);
        Launch("group_norm_apply_f32", ((uint)splits, GridY(groups), 1), (256, 1, 1), 0,
            [Ptr(x), Ptr(gamma), Ptr(beta), Ptr(y), Ptr(stats), Ptr(mean), Ptr(rstd), s.N, s.T, s.C, s.S, s.Groups, splits, s.Eps, silu ? 1 : 0]);
    }

    /// <inheritdoc />
    public void GroupNormBackward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor mean, Tensor rstd, Tensor dy,
        Tensor? dx, Tensor? dgamma, Tensor? dbeta, bool silu, Tensor? dxAddend = null)
    {
        ulong add = dx is null || dxAddend is null ? 0UL : Ptr(dxAddend);
        long channels = (long)s.N * s.C, groups = (long)s.N * s.Groups;
        int reduceSplits = GroupNormSplits(channels, (long)s.T * s.S);
        int splits = dx is null ? 1 : GroupNormSplits(groups, (long)s.T * (s.C / s.Groups) * s.S);
        using var sums = Scratch(channels * reduceSplits * 2);
        using var pg = dgamma is null ? null : Scratch(channels);
        using var pb = dbeta is null ? null : Scratch(channels);
        if (reduceSplits == 1 && splits == 1 && GroupNormOnePass)
        {
            Launch("group_norm_bwd_one_pass_f32", (1, GridY(groups), 1), (256, 1, 1), 0,
                [Ptr(x), Ptr(gamma), Ptr(beta), Ptr(mean), Ptr(rstd), Ptr(dy), Ptr(sums), dx is null ? 0UL : Ptr(dx), add,
                 pg is null ? 0UL : Ptr(pg), pb is null ? 0UL : Ptr(pb), s.N, s.T, s.C, s.S, s.Groups, silu ? 1 : 0]);
        }
        else
        {
            Launch("group_norm_bwd_reduce_f32", ((uint)reduceSplits, GridY(channels), 1), (256, 1, 1), 0,
                [Ptr(x), Ptr(gamma), Ptr(beta), Ptr(mean), Ptr(rstd), Ptr(dy), Ptr(sums), s.N, s.T, s.C, s.S, s.Groups, reduceSplits, silu ? 1 : 0]);
            Launch("group_norm_bwd_dx_f32", ((uint)splits, GridY(groups), 1), (256, 1, 1), 0,
                [Ptr(x), Ptr(gamma), Ptr(beta), Ptr(mean), Ptr(rstd), Ptr(dy), Ptr(sums), dx is null ? 0UL : Ptr(dx), add,
                 pg is null ? 0UL : Ptr(pg), pb is null ? 0UL : Ptr(pb), s.N, s.T, s.C, s.S, s.Groups, reduceSplits, splits, silu ? 1 : 0]);
        }
        ParameterSums(pg, dgamma, pb, dbeta, s.N, s.C);
    }

    /// <inheritdoc />
    public void LayerNormForward(int rows, int cols, float eps, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd) =>
        Launch1D("layer_norm_fwd_f32", rows * 32L, [Ptr(x), Ptr(gamma), Ptr(beta), Ptr(y), Ptr(mean), Ptr(rstd), (long)rows, cols, eps]);

    /// <inheritdoc />
    public void LayerNormBackward(int rows, int cols, Tensor x, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
        Tensor? dx, Tensor? dgamma, Tensor? dbeta, Tensor? dxAddend = null)
    {
        if (dx is not null)
        {
            Launch1D("layer_norm_bwd_f32", rows * 32L,
                [Ptr(x), Ptr(gamma), Ptr(mean), Ptr(rstd), Ptr(dy), Ptr(dx), dxAddend is null ? 0UL : Ptr(dxAddend), (long)rows, cols]);
        }

        if (dgamma is null && dbeta is null)
        {
            return;
        }

        long splits = Math.Clamp(rows / 256, 1, 4L * Device.Multiprocessors);
        long perSplit = (rows + splits - 1) / splits;
        using var pg = dgamma is null ? null : Scratch(splits * cols);
        using var pb = dbeta is null ? null : Scratch(splits * cols);
        Launch("layer_norm_param_grad_f32", (ColumnBlocks(cols), (uint)splits, 1), (Block, 1, 1), 0,
            [Ptr(x), Ptr(mean), Ptr(rstd), Ptr(dy), pg is null ? 0UL : Ptr(pg), pb is null ? 0UL : Ptr(pb), (long)rows, cols, perSplit]);
        ParameterSums(pg, dgamma, pb, dbeta, splits, cols);
    }

    // ---- attention ---------------------------------------------------------------------------------

    /// <inheritdoc />
    public void TemporalAttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse)
    {
        var (fp, r, dp) = TemporalTiles(s);
        uint shared = (uint)(4 * (2 * s.Lq * dp + 4 * r * dp));
        Launch("temporal_attention_fwd_f32", ((uint)Math.Min(s.N * s.Heads, 65535), 1, 1), (128, 1, 1), shared,
            [Ptr(q), Ptr(k), Ptr(v), Ptr(o), Ptr(lse), s.N, s.Heads, s.Lq, s.HeadDim, s.Scale]);
    }

    /// <inheritdoc />
    public void TemporalAttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv)
    {
        var (fp, r, dp) = TemporalTiles(s);
        uint shared = (uint)(4 * (2 * s.Lq * dp + 8 * r * dp + 2 * s.Lq * s.Lq));
        Launch("temporal_attention_bwd_f32", ((uint)Math.Min(s.N * s.Heads, 65535), 1, 1), (128, 1, 1), shared,
            [Ptr(q), Ptr(k), Ptr(v), o is null || lse is null ? 0UL : Ptr(o), o is null || lse is null ? 0UL : Ptr(lse), Ptr(dO), Ptr(dq), Ptr(dk), Ptr(dv), s.N, s.Heads, s.Lq, s.HeadDim, s.Scale]);
    }

    /// <summary>Fp = max(4, next power of two >= F), R = 32 / Fp rows per warp, Dp = D | 1 (bank-conflict padding).</summary>
    private static (int Fp, int R, int Dp) TemporalTiles(in AttentionShape s)
    {
        int fp = Math.Max(4, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)s.Lq));
        return (fp, 32 / fp, s.HeadDim | 1);
    }

    /// <summary>
    /// Most bytes one attention score buffer [n, H, Lq, Lk] may take: the batch is cut into chunks of whole
    /// items that fit, so the workspace stays bounded however large the batch (forward keeps one such buffer,
    /// backward two). At ms256's first level a clip of 16 frames needs 335 MB, one chunk; at batch 16 it would
    /// need 5.4 GB a buffer. Tests lower it to reach the chunked path on small shapes.
    /// </summary>
    internal long AttentionScoresBudgetBytes { get; set; } = 512L << 20;

    /// <summary>Items per chunk: as many as keep one score buffer within the budget, at least one.</summary>
    internal int AttentionChunk(in AttentionShape s) =>
        (int)Math.Clamp(AttentionScoresBudgetBytes / (4L * s.Heads * s.Lq * s.Lk), 1, s.N);

    /// <inheritdoc />
    public void AttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse)
    {
        // Scores for all (n, h) of a chunk at once, [n, H, Lq, Lk], in workspace; only lse outlives the op.
        int w = s.Width, chunk = AttentionChunk(s);
        long plane = (long)s.Lq * s.Lk;
        using var p = Scratch((long)chunk * s.Heads * plane);
        for (int n0 = 0; n0 < s.N; n0 += chunk)
        {
            int n = Math.Min(chunk, s.N - n0);
            ulong qOffset = (ulong)n0 * (ulong)s.Lq * (ulong)w * 4, kOffset = (ulong)n0 * (ulong)s.Lk * (ulong)w * 4;
            ulong qn = Ptr(q) + qOffset, on = Ptr(o) + qOffset, kn = Ptr(k) + kOffset, vn = Ptr(v) + kOffset;
            for (int h = 0; h < s.Heads; h++)
            {
                ulong off = (ulong)(h * s.HeadDim * 4);
                GemmRowMajor(false, true, s.Lq, s.Lk, s.HeadDim, s.Scale, qn + off, w, (long)s.Lq * w, kn + off, w, (long)s.Lk * w,
                    0f, Ptr(p) + (ulong)(h * plane * 4), s.Lk, s.Heads * plane, n);
            }

            Softmax(Ptr(p), Ptr(p), Ptr(lse) + (ulong)n0 * (ulong)s.Heads * (ulong)s.Lq * 4, (long)n * s.Heads * s.Lq, s.Lk);
            for (int h = 0; h < s.Heads; h++)
            {
                ulong off = (ulong)(h * s.HeadDim * 4);
                GemmRowMajor(false, false, s.Lq, s.HeadDim, s.Lk, 1f, Ptr(p) + (ulong)(h * plane * 4), s.Lk, s.Heads * plane,
                    vn + off, w, (long)s.Lk * w, 0f, on + off, w, (long)s.Lq * w, n);
            }
        }
    }

    /// <inheritdoc />
    public void AttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv)
    {
        int w = s.Width, chunk = AttentionChunk(s);
        long plane = (long)s.Lq * s.Lk;
        long chunkRows = (long)chunk * s.Heads * s.Lq;
        using var p = Scratch(chunkRows * s.Lk);
        using var dp = Scratch(chunkRows * s.Lk);
        using var drow = Scratch(chunkRows);
        ulong P(int h) => Ptr(p) + (ulong)(h * plane * 4);
        ulong DP(int h) => Ptr(dp) + (ulong)(h * plane * 4);
        for (int n0 = 0; n0 < s.N; n0 += chunk)
        {
            int n = Math.Min(chunk, s.N - n0);
            long rows = (long)n * s.Heads * s.Lq;
            ulong qOffset = (ulong)n0 * (ulong)s.Lq * (ulong)w * 4, kOffset = (ulong)n0 * (ulong)s.Lk * (ulong)w * 4;
            ulong qn = Ptr(q) + qOffset, on = o is null ? 0 : Ptr(o) + qOffset, dOn = Ptr(dO) + qOffset, dqn = Ptr(dq) + qOffset;
            ulong kn = Ptr(k) + kOffset, vn = Ptr(v) + kOffset, dkn = Ptr(dk) + kOffset, dvn = Ptr(dv) + kOffset;
            for (int h = 0; h < s.Heads; h++)
            {
                ulong off = (ulong)(h * s.HeadDim * 4);
                GemmRowMajor(false, true, s.Lq, s.Lk, s.HeadDim, s.Scale, qn + off, w, (long)s.Lq * w, kn + off, w, (long)s.Lk * w, 0f, P(h), s.Lk, s.Heads * plane, n);
            }

            Softmax(Ptr(p), Ptr(p), 0, rows, s.Lk);
            for (int h = 0; h < s.Heads; h++)
            {
                ulong off = (ulong)(h * s.HeadDim * 4);

                // dv = P^T dO ; dP = dO v^T
                GemmRowMajor(true, false, s.Lk, s.HeadDim, s.Lq, 1f, P(h), s.Lk, s.Heads * plane, dOn + off, w, (long)s.Lq * w, 0f, dvn + off, w, (long)s.Lk * w, n);
                GemmRowMajor(false, true, s.Lq, s.Lk, s.HeadDim, 1f, dOn + off, w, (long)s.Lq * w, vn + off, w, (long)s.Lk * w, 0f, DP(h), s.Lk, s.Heads * plane, n);
            }

            if (o is null)
            {
                // Drow = rowsum(P dP) over the rows of the score layout, consistent with the P recomputed above.
                Launch1D("attention_row_dot_f32", rows * 32, [Ptr(p), Ptr(dp), Ptr(drow), checked((int)rows), 1, 1, s.Lk]);
            }
            else
            {
                Launch1D("attention_row_dot_f32", rows * 32, [dOn, on, Ptr(drow), n, s.Lq, s.Heads, s.HeadDim]);
            }

            Launch1D("attention_dsoftmax_f32", rows * s.Lk, [Ptr(p), Ptr(dp), Ptr(drow), Ptr(dp), rows, s.Lk]);
            for (int h = 0; h < s.Heads; h++)
            {
                ulong off = (ulong)(h * s.HeadDim * 4);

                // dq = scale dS k ; dk = scale dS^T q
                GemmRowMajor(false, false, s.Lq, s.HeadDim, s.Lk, s.Scale, DP(h), s.Lk, s.Heads * plane, kn + off, w, (long)s.Lk * w, 0f, dqn + off, w, (long)s.Lq * w, n);
                GemmRowMajor(true, false, s.Lk, s.HeadDim, s.Lq, s.Scale, DP(h), s.Lk, s.Heads * plane, qn + off, w, (long)s.Lq * w, 0f, dkn + off, w, (long)s.Lk * w, n);
            }
        }
    }

    /// <summary>Row-major strided-batched GEMM with explicit leading dimensions, on cuBLAS (operands swapped).</summary>
    private void GemmRowMajor(bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, long strideA,
        ulong b, int ldb, long strideB, float beta, ulong c, int ldc, long strideC, int batch)
    {
        Products(transB ? Cublas.OpT : Cublas.OpN, transA ? Cublas.OpT : Cublas.OpN, n, m, k, alpha, b, ldb, strideB, a, lda, strideA, beta, c, ldc, strideC, batch);
    }

    // ---- resampling, embedding -----------------------------------------------------------------------

    /// <inheritdoc />
    public void AvgPool2x2Forward(int planes, int h, int w, Tensor x, Tensor y) =>
        Launch1D("window2x2_sum_f32", y.Numel, [Ptr(x), Ptr(y), (long)planes, h / 2, w / 2, 0.25f]);

    /// <inheritdoc />
    public void AvgPool2x2Backward(int planes, int h, int w, Tensor dy, Tensor dx) =>
        Launch1D("broadcast2x2_f32", dx.Numel, [Ptr(dy), Ptr(dx), (long)planes, h / 2, w / 2, 0.25f]);

    /// <inheritdoc />
    public void Upsample2xForward(int planes, int h, int w, Tensor x, Tensor y) =>
        Launch1D("broadcast2x2_f32", y.Numel, [Ptr(x), Ptr(y), (long)planes, h, w, 1f]);

    /// <inheritdoc />
    public void Upsample2xBackward(int planes, int h, int w, Tensor dy, Tensor dx) =>
        Launch1D("window2x2_sum_f32", dx.Numel, [Ptr(dy), Ptr(dx), (long)planes, h, w, 1f]);

    /// <inheritdoc />
    public void EmbeddingForward(ReadOnlySpan<int> ids, Tensor table, Tensor y)
    {
        using var d = UploadIds(ids);
        Launch1D("embedding_fwd_f32", y.Numel, [Ptr(d), Ptr(table), Ptr(y), ids.Length, table.Dim(-1), table.Dim(0)]);
    }

    /// <inheritdoc />
    public void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dy, Tensor dtable)
    {
        using var d = UploadIds(ids);
        Launch1D("embedding_bwd_f32", dy.Numel, [Ptr(d), Ptr(dy), Ptr(dtable), ids.Length, dtable.Dim(-1), dtable.Dim(0)]);
    }

    /// <summary>int32 ids on the device (four bytes each, carried in a float-typed workspace).</summary>
    private Tensor UploadIds(ReadOnlySpan<int> ids)
    {
        var t = Scratch(ids.Length);
        CopyFromHost(MemoryMarshal.Cast<int, float>(ids), t);
        return t;
    }

    // ---- losses, reductions, optimiser ------------------------------------------------------------

    /// <summary>Two-stage deterministic reduction: per-block partials, then one block finishes.</summary>
    private void Reduce(string partialEntry, ReadOnlySpan<KernelArg> partialArgs, long n, Tensor output, float scale, bool accumulate)
    {
        uint blocks = (uint)Math.Clamp((n + Block - 1) / Block, 1, 2L * Device.Multiprocessors);
        using var partial = Scratch(blocks);
        var args = new KernelArg[partialArgs.Length + 1];
        partialArgs.CopyTo(args);
        args[^1] = Ptr(partial);
        Launch(partialEntry, (blocks, 1, 1), (Block, 1, 1), 0, args);
        Launch("reduce_finish_f32", (1, 1, 1), (1024, 1, 1), 0, [Ptr(partial), (int)blocks, Ptr(output), scale, accumulate ? 1 : 0]);
    }

    /// <inheritdoc />
    public void MseForward(Tensor a, Tensor b, Tensor output) =>
        Reduce("sqdiff_partial_f32", [Ptr(a), Ptr(b), a.Numel], a.Numel, output, 1f / a.Numel, accumulate: false);

    /// <inheritdoc />
    public void MseBackward(Tensor a, Tensor b, Tensor dOut, Tensor da)
    {
        // The kernel takes the upstream gradient by value: one small read (the seed of backward is 1).
        Span<float> g = stackalloc float[1];
        CopyToHost(dOut, g);
        Launch1D("mse_bwd_f32", a.Numel, [Ptr(a), Ptr(b), Ptr(da), a.Numel, g[0]]);
    }

    /// <inheritdoc />
    public void Sum(Tensor x, Tensor output) => Reduce("sum_partial_f32", [Ptr(x), x.Numel], x.Numel, output, 1f, accumulate: false);

    /// <inheritdoc />
    public void SumSquaresAccumulate(Tensor x, Tensor output) =>
        Reduce("sumsq_partial_f32", [Ptr(x), x.Numel], x.Numel, output, 1f, accumulate: true);

    /// <inheritdoc />
    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWStepArgs a)
    {
        if (m.DType == DType.BFloat16)
        {
            // bf16 moments: the multi-tensor kernel over one row (its row index, 0, stands for the tensor's in the hash).
            AdamWStep([new AdamWTensors(param, grad, m, v)], a);
            return;
        }

        Launch1D("adamw_f32", param.Numel, [Ptr(param), Ptr(grad), Ptr(m), Ptr(v), param.Numel, a.Lr, a.Beta1, a.Beta2, a.Eps, a.WeightDecay, a.Step, a.GradScale]);
    }

    // ---- multi-tensor kernels: one launch over a table of tensors -----------------------------------

    /// <summary>
    /// Elements per chunk of the multi-tensor kernels, one block's share of a tensor (a tensor smaller than this
    /// is one chunk). Tests lower it to cut small tensors into several chunks.
    /// </summary>
    internal long MultiTensorChunk { get; set; } = 1L << 16;

    /// <summary>
    /// Uploads a table with one row per item (gpu::AdamWSlot, gpu::SumSlot in mobius_cuda.h): <paramref name="addresses"/>
    /// device addresses (<paramref name="address"/>(item, column)), then n and first_chunk, 8 bytes each; returns the
    /// table and the chunks in all.
    /// </summary>
    private (Tensor Table, long Chunks) MultiTensorTable<T>(IReadOnlyList<T> items, int addresses, Func<T, int, ulong> address, Func<T, long> numel)
    {
        int columns = addresses + 2;
        var table = new ulong[columns * items.Count];
        long chunks = 0, chunk = MultiTensorChunk;
        for (int i = 0; i < items.Count; i++)
        {
            var t = items[i];
            long n = numel(t);
            for (int c = 0; c < addresses; c++)
            {
                table[i * columns + c] = address(t, c);
            }

            table[i * columns + columns - 2] = (ulong)n;
            table[i * columns + columns - 1] = (ulong)chunks;
            chunks += (n + chunk - 1) / chunk;
        }

        var floats = MemoryMarshal.Cast<ulong, float>(table.AsSpan());
        var device = Scratch(floats.Length);
        CopyFromHost(floats, device);
        return (device, chunks);
    }

    private static uint ChunkGrid(long chunks) => (uint)Math.Min(chunks, 1L << 30);

    /// <summary>
    /// Copies the fp32 tensors <paramref name="xs"/> into <paramref name="flat"/> one after another
    /// (<paramref name="gather"/>) or back out of it, in one launch (copy_multi_f32): a bucket of gradients for one
    /// all-reduce. flat holds at least their elements in all.
    /// </summary>
    public void CopyMulti(IReadOnlyList<Tensor> xs, Tensor flat, bool gather)
    {
        var offsets = new long[xs.Count];
        long total = 0;
        for (int i = 0; i < xs.Count; i++)
        {
            if (xs[i].DType != DType.Float32 || !ReferenceEquals(xs[i].Backend, this))
            {
                throw new ArgumentException($"copy_multi: {xs[i].Describe()} must be an fp32 tensor of this backend.", nameof(xs));
            }

            offsets[i] = total;
            total += xs[i].Numel;
        }

        if (flat.DType != DType.Float32 || !ReferenceEquals(flat.Backend, this))
        {
            throw new ArgumentException($"copy_multi: {flat.Describe()} must be an fp32 tensor of this backend.", nameof(flat));
        }

        if (total > flat.Numel)
        {
            throw new ShapeMismatchException("copy_multi", $"{xs.Count} tensors of {total} elements do not fit {flat.Describe()}.");
        }

        if (total == 0)
        {
            return;
        }

        var (table, chunks) = MultiTensorTable(Enumerable.Range(0, xs.Count).ToArray(), 2, (i, c) => c == 0 ? Ptr(xs[i]) : (ulong)offsets[i], i => xs[i].Numel);
        using (table)
        {
            Launch("copy_multi_f32", (ChunkGrid(chunks), 1, 1), (Block, 1, 1), 0, [Ptr(table), xs.Count, chunks, MultiTensorChunk, Ptr(flat), gather ? 1 : 0]);
        }
    }

    /// <inheritdoc />
    public void SumSquaresAccumulate(IReadOnlyList<Tensor> xs, Tensor output)
    {
        if (xs.Count == 0)
        {
            return;
        }

        var (table, chunks) = MultiTensorTable(xs, 1, static (x, _) => Ptr(x), static x => x.Numel);
        using (table)
        using (var partial = Scratch(chunks))
        {
            Launch("sumsq_multi_partial_f32", (ChunkGrid(chunks), 1, 1), (Block, 1, 1), 0, [Ptr(table), xs.Count, chunks, MultiTensorChunk, Ptr(partial)]);
            Launch("reduce_finish_f32", (1, 1, 1), (1024, 1, 1), 0, [Ptr(partial), checked((int)chunks), Ptr(output), 1f, 1]);
        }
    }

    /// <inheritdoc />
    public void AdamWStep(IReadOnlyList<AdamWTensors> tensors, in AdamWStepArgs a)
    {
        if (tensors.Count == 0)
        {
            return;
        }

        var moments = tensors[0].M.DType;
        if (tensors.Any(t => t.M.DType != moments || t.V.DType != moments))
        {
            throw new ArgumentException("adamw: the moments of one step are all fp32 or all bf16.");
        }

        var (table, chunks) = MultiTensorTable(tensors, 4, static (t, c) => c switch
        {
            0 => Ptr(t.Param),
            1 => Ptr(t.Grad),
            2 => Ptr(t.M),
            _ => Ptr(t.V),
        }, static t => t.Param.Numel);
        bool narrow = moments == DType.BFloat16;
        using (table)
        {
            Launch(narrow ? "adamw_multi_bf16m" : "adamw_multi_f32", (ChunkGrid(chunks), 1, 1), (Block, 1, 1), 0,
                [Ptr(table), tensors.Count, chunks, MultiTensorChunk, a.Lr, a.Beta1, a.Beta2, a.Eps, a.WeightDecay, a.Step, a.GradScale]);
        }
    }
}
