namespace Mobius.Engine.NN;

/// <summary>An ordered list of child modules named "0", "1", ... (PyTorch's nn.ModuleList).</summary>
public sealed class ModuleList<T> : Module, IReadOnlyList<T>
    where T : Module
{
    private readonly List<T> _items = new();

    /// <summary>Creates an empty list whose children live on <paramref name="backend"/>.</summary>
    public ModuleList(IBackend backend)
        : base(backend)
    {
    }

    /// <inheritdoc />
    public int Count => _items.Count;

    /// <inheritdoc />
    public T this[int index] => _items[index];

    /// <summary>Appends and registers a module; returns it.</summary>
    public T Add(T module)
    {
        AddModule(_items.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), module);
        _items.Add(module);
        return module;
    }

    /// <inheritdoc />
    public IEnumerator<T> GetEnumerator() => _items.GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => _items.GetEnumerator();
}
