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
    public void Lenient_mode_maps_unknown_words_to_unk_and_cuts_long_text()
    {
        var tok = Tokenizer.FromCaptions(["a red heart"], maxLength: 5);
        Assert.Equal([Tokenizer.BosId, tok.Encode("a")[1], Tokenizer.UnkId, Tokenizer.EosId, Tokenizer.PadId], tok.Encode("a zebra", strict: false));
        int[] cut = tok.Encode("a red heart heart heart", strict: false);
        Assert.Equal("a red heart", tok.Decode(cut));
        Assert.Equal(Tokenizer.EosId, cut[^1]);
        Assert.Throws<ArgumentException>(() => tok.Encode("a red heart heart"));
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
