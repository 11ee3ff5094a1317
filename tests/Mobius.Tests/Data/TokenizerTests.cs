using Mobius.Data;
using Xunit;

namespace Mobius.Tests.Data;

public sealed class TokenizerTests
{
    [Fact]
    public void Every_generator_caption_encodes_strictly_and_decodes_back()
    {
        var tok = Tokenizer.ForEmoji();
        int captions = 0;
        foreach (string caption in EmojiCaptions.All())
        {
            int[] ids = tok.Encode(caption);
            string[] words = Tokenizer.SplitWords(caption);
            Assert.Equal(tok.MaxLength, ids.Length);
            Assert.Equal(Tokenizer.BosId, ids[0]);
            Assert.Equal(Tokenizer.EosId, ids[words.Length + 1]);
            Assert.All(ids[(words.Length + 2)..], id => Assert.Equal(Tokenizer.PadId, id));
            Assert.DoesNotContain(Tokenizer.UnkId, ids);
            Assert.Equal(string.Join(' ', words), tok.Decode(ids));
            captions++;
        }

        Assert.Equal(8 * 8 * 8 * EmojiCaptions.TemplateCount * EmojiCaptions.PhraseCount, captions);
        Assert.Equal(EmojiCaptions.All().Max(c => Tokenizer.SplitWords(c).Length) + 2, tok.MaxLength);
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Unknown_words_are_rejected_with_every_one_named(int seed)
    {
        var tok = Tokenizer.ForEmoji(maxLength: 16);
        string a = $"zebra{seed % 1000}", b = "sideways";
        var e = Assert.Throws<UnknownWordsException>(() => tok.Encode($"A red {a} moving {b}, {a}!"));
        Assert.Equal([a, b, ",", "!"], e.Words); // emoji captions have no punctuation
        Assert.Contains(a, e.Message);
        Assert.Contains(b, e.Message);
        Assert.False(tok.Covers($"a red {a}"));
        Assert.True(tok.Covers("A RED HEART"));
    }

    [Fact]
    public void Unknown_words_come_with_the_closest_known_words()
    {
        var tok = Tokenizer.ForEmoji();
        Assert.Equal("heart", tok.Suggest("hart")[0]);    // one deletion
        Assert.Equal("purple", tok.Suggest("purpel")[0]); // two substitutions
        Assert.Contains("moving", tok.Suggest("moves"));   // same stem
        Assert.Contains("spinning", tok.Suggest("spins"));
        Assert.Equal(["smaller"], tok.Suggest("smallest"));
        Assert.Empty(tok.Suggest("zebra"));
        Assert.Empty(tok.Suggest("x"));                  // not "a": one letter changed is the whole word
        Assert.Equal(["on"], tok.Suggest("om"));
        Assert.Empty(tok.Suggest("."));
        Assert.DoesNotContain("heart", tok.Suggest("heart"));
        Assert.All(tok.KnownWords, w => Assert.True(tok.Suggest(w, max: 40).Count <= 40));

        var e = Assert.Throws<UnknownWordsException>(() => tok.Encode("a purpel zebra moves left."));
        Assert.Equal(["purpel", "zebra", "moves", "."], e.Words);
        Assert.Equal(e.Words.Count, e.Suggestions.Count);
        Assert.Equal("purple", e.Suggestions[0][0]);
        Assert.Empty(e.Suggestions[1]);
        Assert.Equal(tok.Vocabulary.Skip(Tokenizer.Specials.Count), e.KnownWords);
        Assert.Contains("purpel (did you mean \"purple\"", e.Message);
        Assert.Contains("zebra, moves (did you mean", e.Message);
        Assert.Contains("\".\" (punctuation the vocabulary lacks: leave it out)", e.Message);
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Edit_distance_matches_a_plain_recursion(int seed)
    {
        Assert.Equal(3, Tokenizer.EditDistance("kitten", "sitting"));
        Assert.Equal(0, Tokenizer.EditDistance("", ""));
        Assert.Equal(4, Tokenizer.EditDistance("", "abcd"));
        var rng = new Random(seed);
        string Word() => new([.. Enumerable.Range(0, rng.Next(0, 7)).Select(_ => (char)('a' + rng.Next(3)))]);

        // The definition itself, memoised: the last letters matched or substituted, or one of them dropped.
        static int Reference(string a, string b)
        {
            var memo = new Dictionary<(int, int), int>();
            int D(int i, int j)
            {
                if (i == 0 || j == 0)
                {
                    return i + j;
                }

                if (memo.TryGetValue((i, j), out int d))
                {
                    return d;
                }

                d = Math.Min(D(i - 1, j - 1) + (a[i - 1] == b[j - 1] ? 0 : 1), Math.Min(D(i - 1, j), D(i, j - 1)) + 1);
                memo[(i, j)] = d;
                return d;
            }

            return D(a.Length, b.Length);
        }

        for (int k = 0; k < 300; k++)
        {
            string a = Word(), b = Word();
            Assert.True(Reference(a, b) == Tokenizer.EditDistance(a, b), $"seed {seed}: \"{a}\" to \"{b}\"");
            Assert.Equal(Tokenizer.EditDistance(a, b), Tokenizer.EditDistance(b, a));
        }
    }

    [Fact]
    public void Lenient_mode_maps_unknown_words_to_unk_and_cuts_long_text()
    {
        var tok = Tokenizer.FromCaptions(["a red heart"], maxLength: 5);
        Assert.Equal([Tokenizer.BosId, tok.Encode("a")[1], Tokenizer.UnkId, Tokenizer.EosId, Tokenizer.PadId], tok.Encode("a zebra", strict: false));
        int[] cut = tok.Encode("a red heart heart heart", strict: false);
        Assert.Equal("a red heart", tok.Decode(cut));
        Assert.Equal(Tokenizer.EosId, cut[^1]);
        var e = Assert.Throws<TextTooLongException>(() => tok.Encode("a red heart heart"));
        Assert.Equal((4, 3), (e.Words, e.MaxWords));
        Assert.Contains("Text has 4 words; the model's text encoder takes at most 3", e.Message);
        Assert.Equal(tok.Encode("a red heart", strict: false), tok.Encode("a red heart")); // exactly MaxWords still fits
    }

    [Fact]
    public void Text_is_lower_cased_and_punctuation_split_off()
    {
        Assert.Equal(["a", "red", "heart", ",", "moving", "left", "!", "3", "x"], Tokenizer.SplitWords("  A RED heart, moving\tleft! 3 x"));
        Assert.Equal(["<", "unk", ">"], Tokenizer.SplitWords("<unk>"));
    }

    [Fact]
    public void Vocabulary_is_sorted_after_the_specials_and_round_trips_through_a_string_list()
    {
        var tok = Tokenizer.FromCaptions(["the blue star", "a red heart, spinning"]);
        Assert.Equal(["<pad>", "<bos>", "<eos>", "<unk>", ",", "a", "blue", "heart", "red", "spinning", "star", "the"], tok.Vocabulary);
        Assert.Equal(7, tok.MaxLength);

        var emoji = Tokenizer.ForEmoji();
        List<string> stored = [.. emoji.Vocabulary];
        var restored = Tokenizer.FromVocabulary(stored, emoji.MaxLength);
        foreach (string caption in EmojiCaptions.All().Take(50))
        {
            Assert.Equal(emoji.Encode(caption), restored.Encode(caption));
        }
    }

    [Fact]
    public void Malformed_vocabularies_are_refused()
    {
        Assert.Throws<ArgumentException>(() => Tokenizer.FromVocabulary(["red", "heart"], 8));
        Assert.Throws<ArgumentException>(() => Tokenizer.FromVocabulary([.. Tokenizer.Specials, "red", "red"], 8));
        Assert.Throws<ArgumentException>(() => Tokenizer.FromVocabulary([.. Tokenizer.Specials, "red heart"], 8));
        Assert.Throws<ArgumentException>(() => Tokenizer.FromVocabulary([.. Tokenizer.Specials, "Red"], 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tokenizer.FromVocabulary([.. Tokenizer.Specials, "red"], 2));
    }
}
