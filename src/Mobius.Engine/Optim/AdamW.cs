namespace Mobius.Engine.Optim;

/// <summary>
/// AdamW (PyTorch semantics: bias-corrected moments, decoupled weight decay) over trainable
/// parameters only, with optional global gradient-norm clipping. Moments are allocated on the first
/// step (accounted as optimiser state), in fp32 or, with <see cref="StateType"/> bf16, in half the bytes (updated
/// in fp32, stored by stochastic rounding: <see cref="IBackend.AdamWStep(Tensor, Tensor, Tensor, Tensor, in AdamWStepArgs)"/>);
/// gradients are released after each step (set to none), so they occupy memory only between backward and step.
/// </summary>
public sealed class AdamW : IDisposable
{
    private readonly List<(string Name, Parameter Parameter)> _params;
    private readonly Dictionary<Parameter, (Tensor M, Tensor V)> _state = new();

    /// <summary>Creates the optimiser for the given named parameters (frozen ones are ignored).</summary>
    public AdamW(IEnumerable<(string Name, Parameter Parameter)> parameters, float lr = 1e-4f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 1e-2f, DType stateType = DType.Float32)
    {
        if (stateType is not (DType.Float32 or DType.BFloat16))
        {
            throw new ArgumentException($"AdamW: moments are kept in float32 or bfloat16, not {stateType.Name()}.", nameof(stateType));
        }

        StateType = stateType;
        _params = parameters.Where(p => !p.Parameter.Frozen).ToList();
        if (_params.Count == 0)
        {
            throw new ArgumentException("AdamW: no trainable parameters.", nameof(parameters));
        }

        Lr = lr;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
    }

    /// <summary>Learning rate (may change between steps).</summary>
    public float Lr { get; set; }

    /// <summary>First-moment decay.</summary>
    public float Beta1 { get; }

    /// <summary>Second-moment decay.</summary>
    public float Beta2 { get; }

    /// <summary>Denominator epsilon.</summary>
    public float Eps { get; }

    /// <summary>Decoupled weight decay.</summary>
    public float WeightDecay { get; }

    /// <summary>The element type of the two moments (fp32, or bf16: half the optimiser state).</summary>
    public DType StateType { get; }

    /// <summary>Steps taken so far.</summary>
    public int StepCount { get; private set; }

    /// <summary>The parameters this optimiser updates.</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => _params;

    /// <summary>
    /// Global L2 norm of all gradients (parameters without a gradient count as zero). One host
    /// synchronisation on device backends.
    /// </summary>
    public float GradNorm()
    {
        var backend = _params[0].Parameter.Backend;
        using var acc = Tensor.Zeros(backend, new Shape(1));
        backend.SumSquaresAccumulate(_params.Select(p => p.Parameter.Grad).OfType<Tensor>().ToList(), acc);
        return MathF.Sqrt(acc.Item());
    }

    /// <summary>
    /// Clips the global gradient norm to <paramref name="maxGradNorm"/> (when positive), applies one
    /// AdamW step to every parameter that has a gradient, then releases the gradients.
    /// </summary>
    /// <returns>The gradient norm before clipping (NaN when clipping is off).</returns>
    public float Step(float maxGradNorm = 0f)
    {
        float norm = float.NaN;
        float scale = 1f;
        if (maxGradNorm > 0)
        {
            norm = GradNorm();
            if (!float.IsFinite(norm))
            {
                throw new NonFiniteException("adamw", $"gradient norm is {norm}; step {StepCount + 1} skipped.");
            }

            scale = norm > maxGradNorm ? maxGradNorm / (norm + 1e-6f) : 1f;
        }

        StepCount++;
        var args = new AdamWStepArgs(Lr, Beta1, Beta2, Eps, WeightDecay, StepCount, scale);

        // One call for all parameters (of a backend), so a device backend can step them in one launch.
        var byBackend = new Dictionary<IBackend, List<AdamWTensors>>();
        foreach (var (_, p) in _params)
        {
            if (p.Grad is not { } g)
            {
                continue;
            }

            var (m, v) = State(p);
            if (!byBackend.TryGetValue(p.Backend, out var list))
            {
                byBackend[p.Backend] = list = [];
            }

            list.Add(new AdamWTensors(p, g, m, v));
        }

        foreach (var (backend, list) in byBackend)
        {
            backend.AdamWStep(list, args);
            list.ForEach(t => t.Param.ClearGrad());
        }

        return norm;
    }

    /// <summary>Releases all gradients without stepping.</summary>
    public void ZeroGrad()
    {
        foreach (var (_, p) in _params)
        {
            p.ClearGrad();
        }
    }

    /// <summary>Moments by parameter name ("name.exp_avg", "name.exp_avg_sq"), for checkpoints.</summary>
    public Dictionary<string, float[]> StateDict()
    {
        var d = new Dictionary<string, float[]>();
        foreach (var (name, p) in _params)
        {
            if (_state.TryGetValue(p, out var s))
            {
                d[name + ".exp_avg"] = s.M.ToArray();
                d[name + ".exp_avg_sq"] = s.V.ToArray();
            }
        }

        return d;
    }

    /// <summary>Restores moments and the step count saved by <see cref="StateDict"/>.</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, float[]> state, int stepCount)
    {
        foreach (var (name, p) in _params)
        {
            if (state.TryGetValue(name + ".exp_avg", out var m) && state.TryGetValue(name + ".exp_avg_sq", out var v))
            {
                if (m.Length != p.Numel || v.Length != p.Numel)
                {
                    throw new InvalidDataException($"optimiser state for '{name}' has the wrong size.");
                }

                var (tm, tv) = State(p);
                tm.CopyFrom(m);
                tv.CopyFrom(v);
            }
        }

        StepCount = stepCount;
    }

    /// <summary>Releases the moment buffers.</summary>
    public void Dispose()
    {
        foreach (var (m, v) in _state.Values)
        {
            m.Dispose();
            v.Dispose();
        }

        _state.Clear();
    }

    private Tensor Moment(Parameter p)
    {
        var t = Tensor.Empty(p.Backend, p.Shape, MemoryCategory.OptimizerState, StateType);
        p.Backend.Fill(t, 0f);
        return t;
    }

    private (Tensor M, Tensor V) State(Parameter p)
    {
        if (!_state.TryGetValue(p, out var s))
        {
            s = (Moment(p), Moment(p));
            _state[p] = s;
        }

        return s;
    }
}
