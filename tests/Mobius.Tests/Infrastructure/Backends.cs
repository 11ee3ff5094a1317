using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Tests;

/// <summary>
/// One backend instance shared by the tests of a class. The suite is written once against
/// <see cref="IBackend"/> and instantiated per backend by deriving a sealed class per fixture.
/// </summary>
public abstract class BackendFixture : IDisposable
{
    public abstract IBackend Backend { get; }

    public virtual void Dispose() => Backend.Dispose();
}

/// <summary>The managed CPU backend, with poisoned allocations so reads of unwritten memory show up as NaN.</summary>
public sealed class CpuFixture : BackendFixture
{
    public override IBackend Backend { get; } = new CpuBackend { PoisonAllocations = true };
}
