namespace Mobius.Cuda;

/// <summary>What the CUDA backend lets tensor cores do with the fp32 products of cuBLAS and cuDNN (<see cref="CudaBackend.TensorCores"/>).</summary>
public enum TensorCoreMath
{
    /// <summary>Strict fp32 on FMA units, as the CPU backend computes (`--math fp32`, the default).</summary>
    None,

    /// <summary>TF32: GEMMs and convolutions read fp32 inputs with 11 significant bits and accumulate in fp32 (`--math tf32`).</summary>
    Tf32,

    /// <summary>bf16 GEMMs (fp32 inputs rounded to 8 significant bits, fp32 accumulation); convolutions in TF32 (`--math bf16`).</summary>
    Bf16,
}
