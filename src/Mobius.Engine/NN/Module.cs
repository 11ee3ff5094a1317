namespace Mobius.Engine.NN;

/// <summary>
/// A layer or model with named parameters and child modules, like PyTorch's nn.Module. Parameter
/// names are dotted paths ("down.0.res.conv1.weight"), the keys of <see cref="StateDict"/> and of
/// checkpoints. Disposing a module releases every parameter it owns, deterministically.
/// </summary>
public abstract class Module : IDisposable
{
    private readonly List<(string Name, Parameter Parameter)> _parameters = new();
    private readonly List<(string Name, Module Module)> _children = new();
    private readonly List<Tensor> _buffers = new();
    private bool _disposed;

    /// <summary>Creates a module whose parameters live on <paramref name="backend"/>.</summary>
    protected Module(IBackend backend) => Backend = backend ?? throw new ArgumentNullException(nameof(backend));

    /// <summary>The backend holding this module's parameters.</summary>
    public IBackend Backend { get; }

    /// <summary>Every parameter with its dotted name, depth first in registration order.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedParameters()
    {
        foreach (var (name, p) in _parameters)
        {
            yield return (name, p);
        }

        foreach (var (childName, child) in _children)
        {
            foreach (var (name, p) in child.NamedParameters())
            {
                yield return ($"{childName}.{name}", p);
            }
        }
    }

    /// <summary>Every parameter.</summary>
    public IEnumerable<Parameter> Parameters() => NamedParameters().Select(np => np.Parameter);

    /// <summary>Parameters that are not frozen.</summary>
    public IEnumerable<Parameter> TrainableParameters() => Parameters().Where(p => !p.Frozen);

    /// <summary>Number of scalars in all (or only trainable) parameters.</summary>
    public long ParameterCount(bool trainableOnly = false) =>
        (trainableOnly ? TrainableParameters() : Parameters()).Sum(p => p.Numel);

    /// <summary>Freezes every parameter: no gradient, no weight-gradient work.</summary>
    public void Freeze() => SetFrozen(true);

    /// <summary>Makes every parameter trainable again.</summary>
    public void Unfreeze() => SetFrozen(false);

    /// <summary>This module and every module under it, depth first in registration order.</summary>
    public IEnumerable<Module> Modules()
    {
        yield return this;
        foreach (var (_, child) in _children)
        {
            foreach (var m in child.Modules())
            {
                yield return m;
            }
        }
    }

    /// <summary>
    /// Stores the weights of every frozen <see cref="Linear"/>, <see cref="Conv2d"/> and <see cref="Embedding"/> under
    /// this module in <paramref name="dtype"/>: <see cref="DType.BFloat16"/> halves their bytes (each value rounded to
    /// the nearest bf16; ops widen a layer's weight to fp32 only while they read it), <see cref="DType.Float32"/>
    /// moves every such weight back. Norms and biases stay fp32. Call it after freezing; unfreezing a parameter
    /// moves it back to fp32.
    /// </summary>
    /// <returns>The number of weights now stored in <paramref name="dtype"/> that were not before.</returns>
    public int StoreFrozenWeights(DType dtype)
    {
        int changed = 0;
        foreach (var m in Modules())
        {
            var w = m switch
            {
                Linear l => l.Weight,
                Conv2d c => c.Weight,
                Embedding e => e.Weight,
                _ => null,
            };
            if (w is null || w.DType == dtype || (dtype != DType.Float32 && !w.Frozen))
            {
                continue;
            }

            w.StoreAs(dtype);
            changed++;
        }

        return changed;
    }

    /// <summary>A host copy of every parameter by name.</summary>
    public Dictionary<string, float[]> StateDict() => NamedParameters().ToDictionary(np => np.Name, np => np.Parameter.ToArray());

    /// <summary>
    /// Copies values into parameters by name. With <paramref name="strict"/>, a parameter missing from
    /// <paramref name="state"/> or an unexpected entry is an error; a size mismatch always is.
    /// </summary>
    /// <returns>The names of the parameters that were loaded.</returns>
    public IReadOnlyList<string> LoadStateDict(IReadOnlyDictionary<string, float[]> state, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(state);
        var named = NamedParameters().ToList();
        var known = named.Select(n => n.Name).ToHashSet();
        if (strict)
        {
            var missing = named.Where(n => !state.ContainsKey(n.Name)).Select(n => n.Name).ToList();
            var unexpected = state.Keys.Where(k => !known.Contains(k)).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
            {
                throw new InvalidDataException(
                    $"state dict does not match {GetType().Name}: missing [{string.Join(", ", missing.Take(8))}{(missing.Count > 8 ? ", ..." : "")}], " +
                    $"unexpected [{string.Join(", ", unexpected.Take(8))}{(unexpected.Count > 8 ? ", ..." : "")}].");
            }
        }

        var loaded = new List<string>();
        foreach (var (name, p) in named)
        {
            if (!state.TryGetValue(name, out var values))
            {
                continue;
            }

            if (values.Length != p.Numel)
            {
                throw new InvalidDataException($"state dict entry '{name}' has {values.Length} values, parameter {p.Shape} needs {p.Numel}.");
            }

            p.CopyFrom(values);
            loaded.Add(name);
        }

        return loaded;
    }

    /// <summary>Releases every parameter of this module and its children.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        ReleaseOwned();
        foreach (var (_, p) in _parameters)
        {
            p.ClearGrad();
            p.Dispose();
        }

        foreach (var (_, c) in _children)
        {
            c.Dispose();
        }

        foreach (var b in _buffers)
        {
            b.Dispose();
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Releases what a module owns beyond its parameters, children and buffers (called once, by <see cref="Dispose"/>).</summary>
    protected virtual void ReleaseOwned()
    {
    }

    /// <summary>
    /// Creates and registers a parameter initialised by <paramref name="init"/> (not called on a
    /// <see cref="MetaBackend"/>, which holds shapes only).
    /// </summary>
    protected Parameter AddParameter(string name, Shape shape, Func<float[]> init)
    {
        ValidateName(name);
        var p = Backend is MetaBackend ? Parameter.Uninitialised(Backend, name, shape) : Parameter.Create(Backend, name, shape, init());
        _parameters.Add((name, p));
        return p;
    }

    /// <summary>Creates a constant tensor owned by this module (not a parameter, not in the state dict).</summary>
    protected Tensor AddBuffer(Shape shape, float[] values)
    {
        var t = Tensor.FromArray(Backend, values, shape, MemoryCategory.Weights);
        _buffers.Add(t);
        return t;
    }

    /// <summary>Registers a child module under <paramref name="name"/>.</summary>
    protected T AddModule<T>(string name, T module)
        where T : Module
    {
        ValidateName(name);
        _children.Add((name, module));
        return module;
    }

    private void SetFrozen(bool frozen)
    {
        foreach (var p in Parameters())
        {
            p.Frozen = frozen;
        }
    }

    private void ValidateName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
        {
            throw new ArgumentException($"invalid module member name '{name}'.", nameof(name));
        }

        if (_parameters.Any(p => p.Name == name) || _children.Any(c => c.Name == name))
        {
            throw new ArgumentException($"{GetType().Name} already has a member named '{name}'.", nameof(name));
        }
    }
}
