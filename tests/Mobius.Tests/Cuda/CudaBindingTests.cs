using Mobius.Cuda;
using Mobius.Cuda.Interop;
using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>The bindings' failures become the documented exceptions, naming the call and the library's message.</summary>
public sealed class CudaBindingTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    [Fact]
    public void The_device_is_described()
    {
        var info = CudaDevice.List();
        Assert.NotEmpty(info);
        Assert.True(info[0].Major >= 8, info[0].ToString());
        Assert.Contains(info[0].Arch, B.DeviceName);
        Assert.Contains("temporal_attention_fwd_f32", B.KernelNames);
        var (free, total) = B.DeviceMemoryInfo();
        Assert.InRange(free, 1, total);
    }

    [Fact]
    public void Bad_ptx_is_refused_with_the_jit_log()
    {
        // Text that is not PTX at all is not an image the driver knows (what a real driver answers).
        var e = Assert.Throws<CudaException>(() => new KernelModule("this is not PTX", "bad.ptx"));
        Assert.Contains("cuModuleLoadDataEx(bad.ptx)", e.Message);
        Assert.Equal("CUDA_ERROR_INVALID_IMAGE", e.StatusName);

        // PTX that fails to compile (here: the body is never closed) comes back with the compiler's log.
        var p = Assert.Throws<CudaException>(() => new KernelModule(".version 7.8\n.target sm_90\n.address_size 64\n\n.visible .entry broken()\n{\n  ret;\n", "broken.ptx"));
        Assert.Contains("cuModuleLoadDataEx(broken.ptx)", p.Message);
        Assert.Equal("CUDA_ERROR_INVALID_PTX", p.StatusName);
        Assert.Contains("JIT log:", p.Message);
    }

    [Fact]
    public void A_launch_with_an_impossible_block_fails_naming_the_kernel()
    {
        using var x = Tensor.Full(B, new Shape(4, 4), 1f);
        var e = Assert.Throws<CudaException>(() => B.Launch("ew_scale_f32", (1, 1, 1), (2048, 1, 1), 0, [CudaBackend.Ptr(x), 16L, CudaBackend.Ptr(x), 2f]));
        Assert.Contains("cuLaunchKernel(ew_scale_f32)", e.Message);

        // The context is still usable afterwards.
        Assert.All(x.ToArray(), v => Assert.Equal(1f, v));
        Assert.Throws<InvalidOperationException>(() => B.Launch("no_such_kernel", (1, 1, 1), (1, 1, 1), 0, []));
    }

    [Fact]
    public void Running_out_of_device_memory_raises_out_of_memory_and_keeps_what_was_there()
    {
        using var kept = Tensor.Full(B, new Shape(256), 3f);
        var (_, total) = B.DeviceMemoryInfo();
        // Twice the device's memory (1 GiB rows of floats): more than any device has free, also a 141 GB H200.
        int rows = checked((int)(2 * total / (1L << 30)) + 1);
        var e = Assert.Throws<OutOfDeviceMemoryException>(() => Tensor.Empty(B, new Shape(rows, 1 << 28)));
        Assert.Contains("cuda: out of memory", e.Message);
        Assert.All(kept.ToArray(), v => Assert.Equal(3f, v));
    }

    [Fact]
    public void Cublas_and_cudnn_errors_name_the_call()
    {
        var e = Assert.Throws<CudaException>(() => Cublas.Check(7, "cublasSgemm_v2"));
        Assert.Contains("cublasSgemm_v2", e.Message);
        Assert.Contains("CUBLAS_STATUS", e.StatusName);
        var d = Assert.Throws<CudaException>(() => Cudnn.Check(3, "cudnnConvolutionForward"));
        Assert.Contains("cudnnConvolutionForward", d.Message);
        Assert.Contains("CUDNN_STATUS", d.StatusName);
    }
}
