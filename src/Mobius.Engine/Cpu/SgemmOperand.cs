namespace Mobius.Engine.Cpu;

/// <summary>
/// One operand of a product as the packing routines see it: a set of lines (the rows of op(A), or the
/// columns of op(B)), each a sequence of depth elements (the k index). Element (line l, depth p) is at
/// P + l*Line + (p % SegLen)*Depth + (p / SegLen)*SegStride: the depth may be the concatenation of
/// equal segments that lie anywhere, which turns a sum of products over images or frames
/// (sum_s op(A_s) op(B_s)) into one product with a long k.
/// </summary>
internal readonly unsafe struct GemmOperand
{
    public readonly float* P;
    public readonly nint Line;
    public readonly nint Depth;
    public readonly int SegLen;
    public readonly nint SegStride;

    private GemmOperand(float* p, nint line, nint depth, int segLen, nint segStride)
    {
        P = p;
        Line = line;
        Depth = depth;
        SegLen = segLen;
        SegStride = segStride;
    }

    /// <summary>op(A) of a row-major A (stored k x m with row stride lda when transposed).</summary>
    public static GemmOperand A(float* a, int lda, bool trans) => trans ? new(a, 1, lda, int.MaxValue, 0) : new(a, lda, 1, int.MaxValue, 0);

    /// <summary>op(B) of a row-major B (stored n x k with row stride ldb when transposed).</summary>
    public static GemmOperand B(float* b, int ldb, bool trans) => trans ? new(b, ldb, 1, int.MaxValue, 0) : new(b, 1, ldb, int.MaxValue, 0);

    /// <summary>Element (line l, depth p) at p[l*line + p*depth].</summary>
    public static GemmOperand Strided(float* p, nint line, nint depth) => new(p, line, depth, int.MaxValue, 0);

    /// <summary>The same lines with depth cut into segments of <paramref name="length"/>, segment s at offset s * <paramref name="stride"/>.</summary>
    public GemmOperand Segmented(int length, nint stride) => new(P, Line, Depth, length, stride);

    /// <summary>Whether the depth is one contiguous run of stride <see cref="Depth"/> for a product of depth k.</summary>
    public bool IsPlain(int k) => SegLen >= k;

    /// <summary>The operand from line <paramref name="line"/> on.</summary>
    public GemmOperand FromLine(int line) => new(P + line * Line, Line, Depth, SegLen, SegStride);

    /// <summary>Address of element (line, depth).</summary>
    public float* At(int line, int depth) => P + line * Line + (depth % SegLen) * Depth + (depth / SegLen) * SegStride;
}

/// <summary>
/// op(A) packed once into MR-row panels over its whole depth, for many products that share it (a conv's
/// weights against each image). Panel t holds rows t*MR .. t*MR + MR - 1 (zero-padded) at
/// Data + t*PanelStride, depth p at offset p*MR, so any depth range of a panel is contiguous.
/// </summary>
internal readonly unsafe struct PackedA
{
    public readonly float* Data;
    public readonly int M;
    public readonly int K;
    public readonly nint PanelStride;

    public PackedA(float* data, int m, int k, nint panelStride)
    {
        Data = data;
        M = m;
        K = k;
        PanelStride = panelStride;
    }

    /// <summary>Floats needed to pack an m x k op(A).</summary>
    public static long Size(int m, int k) => (long)(m + Sgemm.MR - 1) / Sgemm.MR * Sgemm.MR * k;

    /// <summary>The columns [k0, k0 + k) of op(A): the product over only part of the depth.</summary>
    public PackedA Slice(int k0, int k) => new(Data + (nint)k0 * Sgemm.MR, M, k, PanelStride);

    /// <summary>The rows from <paramref name="row"/> (a multiple of MR) on.</summary>
    public PackedA FromRow(int row) => new(Data + row / Sgemm.MR * PanelStride, M - row, K, PanelStride);
}
