using Mobius.Cuda.Interop;
using Mobius.Engine;

namespace Mobius.Cuda;

/// <summary>
/// Spatial convolutions on cuDNN's legacy API: descriptors and algorithm choices cached per shape,
/// FMA math (strict fp32, so results match the CPU backend) unless <see cref="TensorCores"/> allows TF32 tensor cores,
/// workspace from our allocator.
/// The parallel topology's spatial chain calls only <see cref="Conv2dForward"/>: inference-only.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<Conv2dShape, ConvPlan> _convPlans = new();

    /// <inheritdoc />
    public void Conv2dForward(in Conv2dShape s, Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        MakeCurrent();
        var plan = Plan(s);
        UseMath(plan, plan.FwdMath);
        float one = 1f, zero = 0f;
        using (var ws = Workspace(plan.FwdWorkspace))
        {
            using (Call("cudnnConvolutionForward"))
            {
                Cudnn.Check(Cudnn.cudnnConvolutionForward(_lane.Dnn, &one, plan.X, Ptr(x), plan.W, Ptr(w), plan.Conv, plan.FwdAlgo,
                    WsPtr(ws), (nuint)plan.FwdWorkspace, &zero, plan.Y, Ptr(y)), "cudnnConvolutionForward");
            }
        }

        if (bias is not null)
        {
            using (Call("cudnnAddTensor"))
            {
                Cudnn.Check(Cudnn.cudnnAddTensor(_lane.Dnn, &one, plan.Bias, Ptr(bias), &one, plan.Y, Ptr(y)), "cudnnAddTensor");
            }
        }
    }

    /// <inheritdoc />
    public void Conv2dBackwardData(in Conv2dShape s, Tensor dy, Tensor w, Tensor dx)
    {
        MakeCurrent();
        var plan = Plan(s);
        UseMath(plan, plan.DataMath);
        float one = 1f, zero = 0f;
        using var ws = Workspace(plan.DataWorkspace);
        using (Call("cudnnConvolutionBackwardData"))
        {
            Cudnn.Check(Cudnn.cudnnConvolutionBackwardData(_lane.Dnn, &one, plan.W, Ptr(w), plan.Y, Ptr(dy), plan.Conv, plan.DataAlgo,
                WsPtr(ws), (nuint)plan.DataWorkspace, &zero, plan.X, Ptr(dx)), "cudnnConvolutionBackwardData");
        }
    }

    /// <inheritdoc />
    public void Conv2dBackwardFilter(in Conv2dShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias)
    {
        MakeCurrent();
        var plan = Plan(s);
        UseMath(plan, plan.FilterMath);
        float one = 1f, zero = 0f;
        using (var ws = Workspace(plan.FilterWorkspace))
        {
            using (Call("cudnnConvolutionBackwardFilter"))
            {
                Cudnn.Check(Cudnn.cudnnConvolutionBackwardFilter(_lane.Dnn, &one, plan.X, Ptr(x), plan.Y, Ptr(dy), plan.Conv, plan.FilterAlgo,
                    WsPtr(ws), (nuint)plan.FilterWorkspace, &zero, plan.W, Ptr(dw)), "cudnnConvolutionBackwardFilter");
            }
        }

        if (dbias is not null)
        {
            using (Call("cudnnConvolutionBackwardBias"))
            {
                Cudnn.Check(Cudnn.cudnnConvolutionBackwardBias(_lane.Dnn, &one, plan.Y, Ptr(dy), &zero, plan.Bias, Ptr(dbias)), "cudnnConvolutionBackwardBias");
            }
        }
    }

    private Tensor? Workspace(long bytes) =>
        bytes <= 0 ? null : Tensor.Empty(this, WorkspaceShape((bytes + 3) / 4), MemoryCategory.Workspace);

    private static ulong WsPtr(Tensor? ws) => ws is null ? 0 : Ptr(ws);

    private ConvPlan Plan(in Conv2dShape s)
    {
        if (_convPlans.TryGetValue(s, out var plan))
        {
            return plan;
        }

        plan = new ConvPlan();
        Cudnn.Check(Cudnn.cudnnCreateTensorDescriptor(out plan.X), "cudnnCreateTensorDescriptor");
        Cudnn.Check(Cudnn.cudnnSetTensor4dDescriptor(plan.X, Cudnn.TensorNchw, Cudnn.DataFloat, s.N, s.Cin, s.H, s.W), "cudnnSetTensor4dDescriptor");
        Cudnn.Check(Cudnn.cudnnCreateTensorDescriptor(out plan.Y), "cudnnCreateTensorDescriptor");
        Cudnn.Check(Cudnn.cudnnSetTensor4dDescriptor(plan.Y, Cudnn.TensorNchw, Cudnn.DataFloat, s.N, s.Cout, s.OutH, s.OutW), "cudnnSetTensor4dDescriptor");
        Cudnn.Check(Cudnn.cudnnCreateTensorDescriptor(out plan.Bias), "cudnnCreateTensorDescriptor");
        Cudnn.Check(Cudnn.cudnnSetTensor4dDescriptor(plan.Bias, Cudnn.TensorNchw, Cudnn.DataFloat, 1, s.Cout, 1, 1), "cudnnSetTensor4dDescriptor");
        Cudnn.Check(Cudnn.cudnnCreateFilterDescriptor(out plan.W), "cudnnCreateFilterDescriptor");
        Cudnn.Check(Cudnn.cudnnSetFilter4dDescriptor(plan.W, Cudnn.DataFloat, Cudnn.TensorNchw, s.Cout, s.Cin, s.Kernel, s.Kernel), "cudnnSetFilter4dDescriptor");
        Cudnn.Check(Cudnn.cudnnCreateConvolutionDescriptor(out plan.Conv), "cudnnCreateConvolutionDescriptor");
        Cudnn.Check(Cudnn.cudnnSetConvolution2dDescriptor(plan.Conv, s.Pad, s.Pad, s.Stride, s.Stride, 1, 1, Cudnn.CrossCorrelation, Cudnn.DataFloat),
            "cudnnSetConvolution2dDescriptor");
        // The heuristics rank under the mode's math type: FMA only, or TF32 allowed (default math).
        int allowed = _tensorCores == TensorCoreMath.None ? Cudnn.FmaMath : Cudnn.DefaultMath;
        UseMath(plan, allowed);
        var perf = new Cudnn.AlgoPerf[8];
        Cudnn.Check(Cudnn.cudnnGetConvolutionForwardAlgorithm_v7(_lane.Dnn, plan.X, plan.W, plan.Conv, plan.Y, perf.Length, out int n, perf), "cudnnGetConvolutionForwardAlgorithm_v7");
        (plan.FwdAlgo, plan.FwdMath) = Choice(BestEntry(perf, n, "forward", ConvWorkspaceLimitBytes));
        Cudnn.Check(Cudnn.cudnnGetConvolutionBackwardDataAlgorithm_v7(_lane.Dnn, plan.W, plan.Y, plan.Conv, plan.X, perf.Length, out n, perf), "cudnnGetConvolutionBackwardDataAlgorithm_v7");
        (plan.DataAlgo, plan.DataMath) = Choice(BestEntry(perf, n, "backward data", ConvWorkspaceLimitBytes));
        Cudnn.Check(Cudnn.cudnnGetConvolutionBackwardFilterAlgorithm_v7(_lane.Dnn, plan.X, plan.Y, plan.Conv, plan.W, perf.Length, out n, perf), "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
        (plan.FilterAlgo, plan.FilterMath) = Choice(BestEntry(perf, n, "backward filter", ConvWorkspaceLimitBytes));

        // Each workspace as its algorithm will run: under the math type it was ranked under.
        UseMath(plan, plan.FwdMath);
        Cudnn.Check(Cudnn.cudnnGetConvolutionForwardWorkspaceSize(_lane.Dnn, plan.X, plan.W, plan.Conv, plan.Y, plan.FwdAlgo, out nuint fws), "cudnnGetConvolutionForwardWorkspaceSize");
        plan.FwdWorkspace = (long)fws;
        UseMath(plan, plan.DataMath);
        Cudnn.Check(Cudnn.cudnnGetConvolutionBackwardDataWorkspaceSize(_lane.Dnn, plan.W, plan.Y, plan.Conv, plan.X, plan.DataAlgo, out nuint dws), "cudnnGetConvolutionBackwardDataWorkspaceSize");
        plan.DataWorkspace = (long)dws;
        UseMath(plan, plan.FilterMath);
        Cudnn.Check(Cudnn.cudnnGetConvolutionBackwardFilterWorkspaceSize(_lane.Dnn, plan.X, plan.Y, plan.Conv, plan.W, plan.FilterAlgo, out nuint wws), "cudnnGetConvolutionBackwardFilterWorkspaceSize");
        plan.FilterWorkspace = (long)wws;

        _convPlans[s] = plan;
        return plan;
    }

    /// <summary>
    /// Most workspace bytes a convolution algorithm may ask for. cuDNN's heuristics rank by speed alone, and
    /// at large batches some of their first choices want gigabytes of workspace that no memory plan counts;
    /// within this bound, the planner's reserve for the libraries covers it.
    /// </summary>
    internal long ConvWorkspaceLimitBytes { get; set; } = 1L << 30;

    /// <summary>
    /// The heuristics' first deterministic algorithm that reported success within the workspace limit, else
    /// their first that did within it, else the successful one wanting the least workspace: some backward
    /// algorithms add with atomics, whose order changes from run to run, and a run that resumes from a
    /// checkpoint must repeat the uninterrupted one bit for bit.
    /// </summary>
    internal static int Best(Cudnn.AlgoPerf[] perf, int count, string what, long limit) => BestEntry(perf, count, what, limit).Algo;

    /// <summary>The entry <see cref="Best"/> picks, with the math type cuDNN ranked the algorithm under.</summary>
    internal static Cudnn.AlgoPerf BestEntry(Cudnn.AlgoPerf[] perf, int count, string what, long limit)
    {
        for (int i = 0; i < count; i++)
        {
            if (perf[i].Status == 0 && perf[i].Determinism == Cudnn.Deterministic && (long)perf[i].Memory <= limit)
            {
                return perf[i];
            }
        }

        int best = -1;
        for (int i = 0; i < count; i++)
        {
            if (perf[i].Status != 0)
            {
                continue;
            }

            if ((long)perf[i].Memory <= limit)
            {
                return perf[i];
            }

            if (best < 0 || perf[i].Memory < perf[best].Memory)
            {
                best = i;
            }
        }

        return best >= 0
            ? perf[best]
            : throw new CudaException($"cudnnGetConvolution*Algorithm_v7 ({what})", -1, "CUDNN_STATUS_NOT_SUPPORTED", "no convolution algorithm is supported for this shape");
    }

    /// <summary>
    /// An algorithm and the math type cuDNN ranked it under: with TF32 allowed the heuristics list tensor-core
    /// algorithms under CUDNN_TENSOR_OP_MATH and others under CUDNN_DEFAULT_MATH, and each runs with the
    /// descriptor set to its own (as PyTorch does); in strict fp32 every entry is FMA math.
    /// </summary>
    private static (int Algo, int Math) Choice(Cudnn.AlgoPerf p) => (p.Algo, p.MathType);

    /// <summary>Sets the shared descriptor's math type to the one the next call's algorithm was chosen under.</summary>
    private static void UseMath(ConvPlan plan, int math)
    {
        if (plan.Math != math)
        {
            Cudnn.Check(Cudnn.cudnnSetConvolutionMathType(plan.Conv, math), "cudnnSetConvolutionMathType");
            plan.Math = math;
        }
    }

    private void FreeConvDescriptors()
    {
        foreach (var p in _convPlans.Values)
        {
            Cudnn.cudnnDestroyTensorDescriptor(p.X);
            Cudnn.cudnnDestroyTensorDescriptor(p.Y);
            Cudnn.cudnnDestroyTensorDescriptor(p.Bias);
            Cudnn.cudnnDestroyFilterDescriptor(p.W);
            Cudnn.cudnnDestroyConvolutionDescriptor(p.Conv);
        }

        _convPlans.Clear();
    }

    private sealed class ConvPlan
    {
        public nint X;
        public nint Y;
        public nint Bias;
        public nint W;
        public nint Conv;
        public int Math = -1; // the math type the descriptor holds now
        public int FwdAlgo;
        public int FwdMath;
        public int DataMath;
        public int FilterMath;
        public int DataAlgo;
        public int FilterAlgo;
        public long FwdWorkspace;
        public long DataWorkspace;
        public long FilterWorkspace;
    }
}
