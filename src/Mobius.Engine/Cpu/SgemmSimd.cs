using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Mobius.Engine.Cpu;

/// <summary>
/// The few vector operations the GEMM micro-kernel needs, as static members so that the kernel, written
/// once as a generic method, is compiled separately for each instruction set with every call inlined.
/// </summary>
/// <typeparam name="TV">The vector register type.</typeparam>
internal unsafe interface ISimdOps<TV>
    where TV : struct
{
    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }

    static abstract TV Zero { get; }

    static abstract TV Load(float* p);

    static abstract void Store(float* p, TV v);

    /// <summary>Every lane = *p.</summary>
    static abstract TV Broadcast(float* p);

    static abstract TV Splat(float x);

    /// <summary>a * b + c.</summary>
    static abstract TV MulAdd(TV a, TV b, TV c);

    static abstract TV Mul(TV a, TV b);

    /// <summary>Hints that the cache line holding p will be written soon.</summary>
    static abstract void Prefetch(float* p);
}

/// <summary>256-bit AVX with fused multiply-add: 16 ymm registers, two FMA pipes on Zen and Intel cores.</summary>
internal readonly unsafe struct Avx2Ops : ISimdOps<Vector256<float>>
{
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    public static int Count => Vector256<float>.Count;

    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* p) => Avx.LoadVector256(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector256<float> v) => Avx.Store(p, v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Broadcast(float* p) => Avx.BroadcastScalarToVector256(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Splat(float x) => Vector256.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => Avx.Multiply(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Prefetch(float* p) => Sse.Prefetch0(p);
}

/// <summary>
/// 512-bit AVX-512F: the same 6-row micro-tile two zmm vectors wide (6 x 32). On cores with full-width 512-bit
/// FMA units (Zen 5, Intel server cores) each instruction does twice the work of the AVX2 one.
/// </summary>
internal readonly unsafe struct Avx512Ops : ISimdOps<Vector512<float>>
{
    /// <summary>
    /// AVX-512F is there and the runtime accelerates 512-bit vectors (it does not on cores where they throttle the
    /// clock, where the AVX2 kernel is the faster one).
    /// </summary>
    public static bool IsSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    public static int Count => Vector512<float>.Count;

    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* p) => Avx512F.LoadVector512(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector512<float> v) => Avx512F.Store(p, v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Broadcast(float* p) => Vector512.Create(*p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Splat(float x) => Vector512.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MulAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => Avx512F.Multiply(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Prefetch(float* p) => Sse.Prefetch0(p);
}

/// <summary>
/// 128-bit vectors through the portable API: SSE on older x64, NEON on Arm64, and a scalar software
/// fallback on anything else, so the same kernel runs everywhere.
/// </summary>
internal readonly unsafe struct PortableOps : ISimdOps<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;

    public static Vector128<float> Zero => Vector128<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Load(float* p) => Vector128.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector128<float> v) => v.Store(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Broadcast(float* p) => Vector128.Create(*p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Splat(float x) => Vector128.Create(x);

    // Fused where the hardware has it, multiply then add where it does not.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MulAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.MultiplyAddEstimate(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Prefetch(float* p)
    {
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(p);
        }
    }
}
