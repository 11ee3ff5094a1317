using System.Numerics;
using Mobius.Cuda.Interop;
using Mobius.Engine;

namespace Mobius.Cuda;

/// <summary>
/// A linear layer's bias on cuBLASLt: the forward product and its bias in one call (CUBLASLT_EPILOGUE_BIAS), the
/// weight gradient and the bias gradient in one (CUBLASLT_EPILOGUE_BGRADB), where the default takes a GEMM and a
/// separate kernel each. Descriptors, layouts and the heuristic's algorithm are cached per shape, operations, mode and
/// buffer alignment.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<LtKey, LtPlan?> _ltPlans = new();
    private nint _lt;

    /// <summary>
    /// Whether a linear layer's bias and bias gradient ride on its GEMMs as cuBLASLt epilogues
    /// (<see cref="IBackend.GemmBias"/>, <see cref="IBackend.GemmRowSums"/>): one call where there are two, and one
    /// pass less over the output. Experimental, off by default until a GPU run has measured it: MOBIUS_GEMM_EPILOGUES=on
    /// (read when the backend opens) or this setter turns it on. The same results within fp32 rounding.
    /// </summary>
    public bool GemmEpilogues { get; set; } = EpilogueSetting(Environment.GetEnvironmentVariable("MOBIUS_GEMM_EPILOGUES"));

    /// <summary>Workspace a cuBLASLt algorithm may take (from our allocator, for the call).</summary>
    internal const long LtWorkspaceBytes = 32L << 20;

    internal static bool EpilogueSetting(string? value) => value switch
    {
        null or "" or "off" => false,
        "on" => true,
        var other => throw new ArgumentException($"MOBIUS_GEMM_EPILOGUES={other}: expected off (the default) or on (biases fused into cuBLASLt GEMMs)."),
    };

    /// <inheritdoc />
    public void GemmBias(in GemmShape s, float alpha, Tensor a, Tensor b, Tensor bias, Tensor c)
    {
        if (!GemmEpilogues || s.Batch != 1 || !LtProduct(s, alpha, a, b, c, bias, CublasLt.EpilogueBias))
        {
            IBackend.SeparateGemmBias(this, s, alpha, a, b, bias, c);
        }
    }

    /// <inheritdoc />
    public void GemmRowSums(in GemmShape s, float alpha, Tensor a, Tensor b, Tensor c, Tensor sums)
    {
        if (!GemmEpilogues || s.Batch != 1 || !LtProduct(s, alpha, a, b, c, sums, CublasLt.EpilogueBgradB))
        {
            IBackend.SeparateGemmRowSums(this, s, alpha, a, b, c, sums);
        }
    }

    /// <summary>
    /// Row-major C [M, N] = alpha op(A) op(B) with an epilogue, as cuBLASLt's column-major C^T = op(B)^T op(A)^T: the
    /// bias (one per row of C^T, a column of C) or the sums of op(A)'s rows over k (a column of C^T each). False when
    /// the heuristic offers no algorithm, and the caller takes the two-call path.
    /// </summary>
    private bool LtProduct(in GemmShape s, float alpha, Tensor a, Tensor b, Tensor c, Tensor vector, uint epilogue)
    {
        MakeCurrent();
        if (_lt == 0)
        {
            Cublas.Check(CublasLt.cublasLtCreate(out _lt), "cublasLtCreate");
        }

        ulong pa = Ptr(a), pb = Ptr(b), pc = Ptr(c), v = Ptr(vector);
        var key = new LtKey(s.M, s.N, s.K, s.TransA, s.TransB, epilogue, _tensorCores, Alignment(pb), Alignment(pa), Alignment(pc), Alignment(v));
        if (!_ltPlans.TryGetValue(key, out var plan))
        {
            plan = NewLtPlan(key, v);
            _ltPlans[key] = plan;
        }

        if (plan is null)
        {
            return false;
        }

        Cublas.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Desc, CublasLt.DescBiasPointer, &v, (nuint)sizeof(ulong)), "cublasLtMatmulDescSetAttribute");
        float beta = 0f;
        using var ws = Workspace(plan.Workspace);
        var algo = plan.Algo;
        using (Call("cublasLtMatmul"))
        {
            Cublas.Check(CublasLt.cublasLtMatmul(_lt, plan.Desc, &alpha, pb, plan.A, pa, plan.B, &beta, pc, plan.D, pc, plan.D, &algo, WsPtr(ws),
                (nuint)plan.Workspace, _lane.Stream), "cublasLtMatmul");
        }
        return true;
    }

    /// <summary>The largest power of two up to 256 that divides a device address (what cuBLASLt may assume of it).</summary>
    private static int Alignment(ulong address) => address == 0 ? 256 : (int)Math.Min(256UL, 1UL << BitOperations.TrailingZeroCount(address));

    private LtPlan? NewLtPlan(in LtKey k, ulong vector)
    {
        int compute = k.Math switch
        {
            TensorCoreMath.Tf32 => Cublas.Compute32FFastTf32,
            TensorCoreMath.Bf16 => Cublas.Compute32FFast16BF,
            _ => Cublas.Compute32F,
        };
        var plan = new LtPlan();
        Cublas.Check(CublasLt.cublasLtMatmulDescCreate(out plan.Desc, compute, Cublas.R32F), "cublasLtMatmulDescCreate");
        int opA = k.TransB ? Cublas.OpT : Cublas.OpN, opB = k.TransA ? Cublas.OpT : Cublas.OpN;
        uint epilogue = k.Epilogue;
        Cublas.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Desc, CublasLt.DescTransA, &opA, sizeof(int)), "cublasLtMatmulDescSetAttribute");
        Cublas.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Desc, CublasLt.DescTransB, &opB, sizeof(int)), "cublasLtMatmulDescSetAttribute");
        Cublas.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Desc, CublasLt.DescEpilogue, &epilogue, sizeof(uint)), "cublasLtMatmulDescSetAttribute");
        // The heuristic reads the vector's alignment from its pointer: one as aligned as this call's (the key has it).
        Cublas.Check(CublasLt.cublasLtMatmulDescSetAttribute(plan.Desc, CublasLt.DescBiasPointer, &vector, (nuint)sizeof(ulong)), "cublasLtMatmulDescSetAttribute");

        // cuBLASLt's A is our B: [N, K] column-major (ld N), or stored [K, N] (ld K) and transposed; its B is our A.
        Cublas.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.A, Cublas.R32F, (ulong)(k.TransB ? k.K : k.N), (ulong)(k.TransB ? k.N : k.K), k.TransB ? k.K : k.N),
            "cublasLtMatrixLayoutCreate");
        Cublas.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.B, Cublas.R32F, (ulong)(k.TransA ? k.M : k.K), (ulong)(k.TransA ? k.K : k.M), k.TransA ? k.M : k.K),
            "cublasLtMatrixLayoutCreate");
        Cublas.Check(CublasLt.cublasLtMatrixLayoutCreate(out plan.D, Cublas.R32F, (ulong)k.N, (ulong)k.M, k.N), "cublasLtMatrixLayoutCreate");

        Cublas.Check(CublasLt.cublasLtMatmulPreferenceCreate(out nint pref), "cublasLtMatmulPreferenceCreate");
        try
        {
            ulong workspace = LtWorkspaceBytes;
            Cublas.Check(CublasLt.cublasLtMatmulPreferenceSetAttribute(pref, CublasLt.PrefMaxWorkspaceBytes, &workspace, sizeof(ulong)), "cublasLtMatmulPreferenceSetAttribute");
            Span<uint> align = [(uint)k.AlignA, (uint)k.AlignB, (uint)k.AlignD, (uint)k.AlignD];
            for (int i = 0; i < 4; i++)
            {
                uint bytes = align[i];
                Cublas.Check(CublasLt.cublasLtMatmulPreferenceSetAttribute(pref, CublasLt.PrefMinAlignmentA + i, &bytes, sizeof(uint)), "cublasLtMatmulPreferenceSetAttribute");
            }

            CublasLt.HeuristicResult result;
            int status = CublasLt.cublasLtMatmulAlgoGetHeuristic(_lt, plan.Desc, plan.A, plan.B, plan.D, plan.D, pref, 1, &result, out int returned);
            if (status != 0 || returned < 1 || result.State != 0)
            {
                plan.Dispose();
                return null; // no fused algorithm for this shape: the caller takes GEMM and kernel
            }

            plan.Algo = result.Algo;
            plan.Workspace = (long)result.WorkspaceSize;
            return plan;
        }
        finally
        {
            CublasLt.cublasLtMatmulPreferenceDestroy(pref);
        }
    }

    private void FreeLt()
    {
        foreach (var plan in _ltPlans.Values)
        {
            plan?.Dispose();
        }

        _ltPlans.Clear();
        if (_lt != 0)
        {
            CublasLt.cublasLtDestroy(_lt);
            _lt = 0;
        }
    }

    /// <summary>A cached cuBLASLt product: our row-major shape, operations, epilogue, mode and the buffers' and vector's alignments.</summary>
    private readonly record struct LtKey(int M, int N, int K, bool TransA, bool TransB, uint Epilogue, TensorCoreMath Math, int AlignA, int AlignB, int AlignD,
        int AlignVector);

    private sealed class LtPlan : IDisposable
    {
        public nint Desc;
        public nint A;
        public nint B;
        public nint D;
        public CublasLt.Algo Algo;
        public long Workspace;

        public void Dispose()
        {
            CublasLt.cublasLtMatrixLayoutDestroy(A);
            CublasLt.cublasLtMatrixLayoutDestroy(B);
            CublasLt.cublasLtMatrixLayoutDestroy(D);
            CublasLt.cublasLtMatmulDescDestroy(Desc);
        }
    }
}
