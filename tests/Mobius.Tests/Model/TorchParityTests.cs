using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.IO;
using Mobius.Model;
using Mobius.Model.Layers;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>
/// Parity with an independent implementation: benchmarks/peers/mobius_torch.py builds the same micro
/// UNet3D and text encoder in PyTorch (float64 on float32-rounded weights and inputs) and wrote the
/// fixtures: weights, inputs, the output, the loss and every trainable gradient. The models here load
/// those weights by name (strict: the two implementations must agree on every name and shape) and must
/// reproduce the rest within the tolerances below.
/// </summary>
public abstract class TorchParityTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private static string FixturePath(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    private static Dictionary<string, float[]> Prefixed(Dictionary<string, SafeTensors.Entry> all, string prefix) =>
        all.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value.Data);

    private static void AssertShapesMatch(Mobius.Engine.NN.Module m, Dictionary<string, SafeTensors.Entry> all)
    {
        foreach (var (name, p) in m.NamedParameters())
        {
            Assert.Equal(all["param." + name].Shape, p.Shape.ToArray());
        }
    }

    /// <summary>Largest |got - want| relative to the largest |want| (a whole-tensor relative error).</summary>
    private static double RelMaxError(float[] got, float[] want)
    {
        double scale = want.Max(v => Math.Abs((double)v));
        double err = got.Zip(want, (g, w) => Math.Abs((double)g - w)).Max();
        return err / Math.Max(scale, 1e-30);
    }

    [Theory]
    [InlineData("serial", Topology.Serial, "loop")]
    [InlineData("parallel", Topology.Parallel, "additive")]
    [InlineData("loop", Topology.Parallel, "loop")]
    [InlineData("skip", Topology.Parallel, "skip")]
    [InlineData("delta", Topology.Parallel, "delta")]
    public void UNet3D_matches_pytorch(string fixtureName, Topology topology, string bridge)
    {
        var (all, meta) = SafeTensors.Read(FixturePath($"unet3d_micro_{fixtureName}.safetensors"));
        Assert.Equal(fixtureName, meta["topology"]);
        var config = ModelConfig.Get(meta["config"]) with { Bridge = bridge };
        using var tape = Tape.Begin();
        using var model = new UNet3D(B, config, topology, seed: 0);
        model.LoadStateDict(Prefixed(all, "param."));
        AssertShapesMatch(model, all);
        model.FreezeSpatial();

        var x = all["input.x"];
        using var xt = Tensor.FromArray(B, x.Data, new Shape(x.Shape));
        var ctx = all["input.context"];
        using var ct = Tensor.FromArray(B, ctx.Data, new Shape(ctx.Shape));
        using var target = Tensor.FromArray(B, all["input.target"].Data, new Shape(x.Shape));
        int[] steps = all["input.timesteps"].Data.Select(v => (int)v).ToArray();

        using var eps = model.Forward(xt, steps, ct, config.Frames);
        using var loss = Ops.MseLoss(eps, target);

        // fp32 through ~40 layers against fp64: outputs agree to about 1e-5 of their scale.
        double outErr = RelMaxError(eps.ToArray(), all["output.eps"].Data);
        Assert.True(outErr < 1e-4, $"{fixtureName} output: relative max error {outErr:E2}");
        Assert.Equal(all["output.loss"].Data[0], loss.Item(), 4e-5f);

        loss.Backward();
        var trainable = model.TemporalParameters().ToList();
        Assert.Equal(all.Keys.Count(k => k.StartsWith("grad.", StringComparison.Ordinal)), trainable.Count);
        foreach (var (name, p) in trainable)
        {
            // Gradients accumulate fp32 rounding through backward as well: 1e-3 of each tensor's scale.
            double err = RelMaxError(p.Grad!.ToArray(), all["grad." + name].Data);
            Assert.True(err < 1e-3, $"{fixtureName} gradient of {name}: relative max error {err:E2}");
            p.ClearGrad();
        }

        Assert.All(model.SpatialParameters(), np => Assert.Null(np.Parameter.Grad));
    }

    [Fact]
    public void Text_encoder_matches_pytorch()
    {
        var (all, meta) = SafeTensors.Read(FixturePath("text_encoder_micro.safetensors"));
        var config = ModelConfig.Get(meta["config"]);
        int vocab = int.Parse(meta["vocab"], System.Globalization.CultureInfo.InvariantCulture);
        using var tape = Tape.Begin();
        using var encoder = new TextEncoder(B, new Random(0), vocab, config.TokenLength, config.TextWidth, config.TextLayers, config.TextHeads);
        encoder.LoadStateDict(Prefixed(all, "param."));
        AssertShapesMatch(encoder, all);
        int[] ids = all["input.ids"].Data.Select(v => (int)v).ToArray();
        var want = all["output.context"];
        using var target = Tensor.FromArray(B, all["input.target"].Data, new Shape(want.Shape));
        using var ctx = encoder.Forward(ids);
        Assert.Equal(want.Shape, ctx.Shape.ToArray());
        double outErr = RelMaxError(ctx.ToArray(), want.Data);
        Assert.True(outErr < 1e-4, $"text encoder output: relative max error {outErr:E2}");
        using var loss = Ops.MseLoss(ctx, target);
        loss.Backward();
        foreach (var (name, p) in encoder.NamedParameters())
        {
            double err = RelMaxError(p.Grad!.ToArray(), all["grad." + name].Data);
            Assert.True(err < 1e-3, $"text encoder gradient of {name}: relative max error {err:E2}");
            p.ClearGrad();
        }
    }
}

public sealed class CpuTorchParityTests(CpuFixture f) : TorchParityTests(f), IClassFixture<CpuFixture>;
public sealed class CudaTorchParityTests(CudaFixture f) : TorchParityTests(f), IClassFixture<CudaFixture>;
