using System.Text.RegularExpressions;
using Xunit;

namespace Mobius.Tests.Docs;

/// <summary>The code shown in docs/ is the code of examples/ (which CI builds and runs), letter for letter.</summary>
public sealed partial class DocsTests
{
    private static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Mobius.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("repository root (Mobius.sln) not found above " + AppContext.BaseDirectory);
    }

    [GeneratedRegex(@"<!-- example: (?<file>[^ ]+) -->\r?\n```csharp\r?\n(?<code>.*?)```", RegexOptions.Singleline)]
    private static partial Regex Example();

    [Fact]
    public void Every_code_listing_in_docs_is_its_example_file()
    {
        string root = Root();
        int listings = 0;
        foreach (var doc in Directory.GetFiles(Path.Combine(root, "docs"), "*.md"))
        {
            foreach (Match m in Example().Matches(File.ReadAllText(doc)))
            {
                string file = Path.Combine(root, m.Groups["file"].Value);
                Assert.True(File.Exists(file), $"{Path.GetFileName(doc)} shows {m.Groups["file"].Value}, which does not exist");
                Assert.True(File.ReadAllText(file) == m.Groups["code"].Value, $"{Path.GetFileName(doc)}: the listing of {m.Groups["file"].Value} differs from the file");
                listings++;
            }
        }

        Assert.True(listings >= 2, $"found {listings} example listings in docs/");
    }
}
