// Build script (Cake 7, a local tool: `dotnet tool restore && dotnet cake --target=<Target>`).
// Targets: Build, Test. Later issues add Kernels, Pack, Bench and GpuPack.

var target = Argument("target", "Test");
var configuration = Argument("configuration", "Release");

void Dotnet(string arguments)
{
    Information($"dotnet {arguments}");
    var exit = StartProcess("dotnet", new ProcessSettings { Arguments = arguments });
    if (exit != 0)
    {
        throw new CakeException($"dotnet {arguments} failed with exit code {exit}.");
    }
}

Task("Build")
    .Does(() => Dotnet($"build Mobius.sln -c {configuration}"));

Task("Test")
    .IsDependentOn("Build")
    .Does(() => Dotnet($"test --project tests/Mobius.Tests -c {configuration} --no-build"));

RunTarget(target);
