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

    /// <summary>True for the CUDA backend on the simulated driver, which runs kernels thread by thread on one core.</summary>
    public virtual bool Simulated => false;

    public virtual void Dispose() => Backend.Dispose();
}

/// <summary>The managed CPU backend, with poisoned allocations so reads of unwritten memory show up as NaN.</summary>
public sealed class CpuFixture : BackendFixture
{
    public override IBackend Backend { get; } = new CpuBackend { PoisonAllocations = true };
}

/// <summary>
/// The CUDA backend: on the simulated driver (kernels/sim) unless MOBIUS_CUDA=real, which the GPU-run
/// script sets on a machine with a GPU. Native libraries load once per process, so one test process
/// tests one of the two.
/// </summary>
public sealed class CudaFixture : BackendFixture
{
    public CudaFixture()
    {
        if (!string.Equals(Environment.GetEnvironmentVariable("MOBIUS_CUDA"), "real", StringComparison.OrdinalIgnoreCase))
        {
            Environment.SetEnvironmentVariable("MOBIUS_CUDA", "sim");
        }

        Backend = new Mobius.Cuda.CudaBackend { PoisonAllocations = true };
    }

    public override IBackend Backend { get; }

    public override bool Simulated => Mobius.Cuda.Interop.NativeLibraries.Simulated;
}
