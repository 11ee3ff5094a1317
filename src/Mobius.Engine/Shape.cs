using System.Collections;

namespace Mobius.Engine;

/// <summary>An immutable tensor shape (row-major dimensions).</summary>
public sealed class Shape : IEquatable<Shape>, IReadOnlyList<int>
{
    private readonly int[] _dims;

    /// <summary>Creates a shape; every dimension must be positive.</summary>
    public Shape(params int[] dims)
    {
        ArgumentNullException.ThrowIfNull(dims);
        foreach (var d in dims)
        {
            if (d <= 0)
            {
                throw new ArgumentException($"Shape {Format(dims)} has a dimension that is not positive.", nameof(dims));
            }
        }

        _dims = (int[])dims.Clone();
        long n = 1;
        foreach (var d in _dims)
        {
            n = checked(n * d);
        }

        Numel = n;
    }

    /// <summary>Number of elements.</summary>
    public long Numel { get; }

    /// <summary>Number of dimensions.</summary>
    public int Rank => _dims.Length;

    /// <inheritdoc />
    public int Count => _dims.Length;

    /// <summary>Dimension <paramref name="i"/>; negative indices count from the end.</summary>
    public int this[int i] => _dims[i < 0 ? _dims.Length + i : i];

    /// <summary>Product of dimensions [start, end).</summary>
    public long Product(int start, int end)
    {
        long p = 1;
        for (int i = start; i < end; i++)
        {
            p *= _dims[i];
        }

        return p;
    }

    /// <summary>A copy of the dimensions.</summary>
    public int[] ToArray() => (int[])_dims.Clone();

    /// <inheritdoc />
    public bool Equals(Shape? other) => other is not null && _dims.AsSpan().SequenceEqual(other._dims);

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var d in _dims)
        {
            h.Add(d);
        }

        return h.ToHashCode();
    }

    /// <inheritdoc />
    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)_dims).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => _dims.GetEnumerator();

    /// <summary>"[2, 3, 4]".</summary>
    public override string ToString() => Format(_dims);

    /// <summary>Equality of shapes.</summary>
    public static bool operator ==(Shape? a, Shape? b) => a is null ? b is null : a.Equals(b);

    /// <summary>Inequality of shapes.</summary>
    public static bool operator !=(Shape? a, Shape? b) => !(a == b);

    /// <summary>Shapes convert implicitly from dimension arrays.</summary>
    public static implicit operator Shape(int[] dims) => new(dims);

    private static string Format(int[] dims) => "[" + string.Join(", ", dims) + "]";
}
