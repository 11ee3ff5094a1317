using System.Text.Json;
using Mobius.Data;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Cli;

/// <summary>The main job, <c>mobius demo</c>, end to end on tiny from the shipped checkpoints (a separate process).</summary>
public sealed class CliDemoTests : CliTestBase
{
    [Fact]
    public void Demo_runs_the_comparison_on_tiny_from_the_shipped_checkpoint_and_writes_the_report()
    {
        using var folder = new TempFolder();
        // --frontier 2: the recompute-policy timings run, at a tenth of the demo's 20 steps (they were half the test's time).
        var r = Mobius("demo", "--steps", "2", "--samples", "1", "--validate-every", "1", "--frontier", "2", "--seed", "4", "--out", folder.Path);
        Assert.True(r.Code == 0, r.Out + r.Err);
        Assert.Contains("serial vs parallel", r.Out, StringComparison.Ordinal);
        Assert.Contains("parallel / serial", r.Out, StringComparison.Ordinal);
        Assert.DoesNotContain("checkpoint is missing", r.Out + r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("checkpoints are missing", r.Out + r.Err, StringComparison.Ordinal);
        Assert.Contains("samples: ", r.Out, StringComparison.Ordinal);

        // sample without --checkpoint draws clips with the shipped text-to-video model.
        var sample = Mobius("sample", "--prompt", "a red heart moving right", "--steps", "2", "--out", folder.File("clip.gif"));
        Assert.True(sample.Code == 0, sample.Out + sample.Err);
        Assert.Contains($"({ModelConfig.Get("tiny").Frames} frames, ", sample.Out, StringComparison.Ordinal);
        Assert.Contains("starting noise correlated 0.9 across each clip's frames", sample.Out, StringComparison.Ordinal);

        using var doc = JsonDocument.Parse(File.ReadAllText(folder.File("result.json")));
        var root = doc.RootElement;
        Assert.Equal("tiny", root.GetProperty("config").GetString());
        Assert.Equal(2, root.GetProperty("steps").GetInt32());
        // The shipped text-to-video model, fine-tuned on the motion and frame noise it was trained with, at the fine-tuning rate.
        Assert.Equal("tiny-t2v.safetensors", root.GetProperty("start").GetProperty("checkpoint").GetString());
        Assert.Equal("serial", root.GetProperty("start").GetProperty("topology").GetString());
        Assert.Equal(["MoveRight"], root.GetProperty("motions").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(0, root.GetProperty("frame_noise_correlation").GetDouble());
        Assert.Equal(TextToVideo.DefaultSampleFrameNoise, root.GetProperty("sample_frame_noise").GetDouble(), 1e-6);
        Assert.Equal(4, root.GetProperty("guidance").GetDouble());
        Assert.Equal(1e-4, root.GetProperty("learning_rate").GetDouble(), 1e-9);
        Assert.Equal(2, root.GetProperty("batch").GetInt32());
        Assert.Equal(4, root.GetProperty("seed").GetInt32());
        Assert.Equal(16, root.GetProperty("validation_batches").GetInt32());  // the demo's: 32 held-out clips, paired
        Assert.Equal(32, root.GetProperty("difference").GetProperty("validation_loss").GetProperty("pairs").GetInt32());
        Assert.Single(root.GetProperty("prompts").EnumerateArray());
        foreach (var topo in new[] { "serial", "parallel" })
        {
            var t = root.GetProperty(topo);
            Assert.Equal([0, 1, 2], t.GetProperty("validation_curve").EnumerateArray().Select(p => p.GetProperty("step").GetInt32()));
            // The shipped model predicts the noise well from the start; a random one is near 1.
            Assert.InRange(t.GetProperty("initial_validation_loss").GetDouble(), 1e-4, 0.1);
            Assert.Single(t.GetProperty("sample_scores").EnumerateArray());
        }

        foreach (var file in new[] { "report.md", "memory.png", "time.png", "loss.png", "serial-samples.gif", "parallel-samples.gif", "serial-frames.png", "parallel-frames.png" })
        {
            Assert.True(File.Exists(folder.File(file)), $"{file} not written");
        }

        // From the text-to-image model: the temporal layers from the identity, every motion, frame noise 0.9, the short run's rate.
        string fromImage = folder.File("from-image");
        var i = Mobius("demo", "--checkpoint", Path.Combine(AppContext.BaseDirectory, "models", "tiny-t2i.safetensors"), "--steps", "1", "--samples", "0", "--validate-every", "0", "--frontier", "0", "--out", fromImage);
        Assert.True(i.Code == 0, i.Out + i.Err);
        using (var image = JsonDocument.Parse(File.ReadAllText(Path.Combine(fromImage, "result.json"))))
        {
            var ir = image.RootElement;
            Assert.Equal("spatial", ir.GetProperty("start").GetProperty("topology").GetString());
            Assert.Equal(JsonValueKind.Null, ir.GetProperty("motions").ValueKind);
            Assert.Equal(0.9, ir.GetProperty("frame_noise_correlation").GetDouble(), 1e-6);
            Assert.Equal(1e-3, ir.GetProperty("learning_rate").GetDouble(), 1e-9);
        }

        AssertCleanFailure(Mobius("demo", "--samples", "-1", "--out", folder.Path), 2, "--samples must be 0 or more");
        AssertCleanFailure(Mobius("demo", "--steps", "0", "--out", folder.Path), 2, "--steps must be at least 1");
    }
}
