using System.Diagnostics.CodeAnalysis;

namespace Mobius.Data;

/// <summary>The shapes of the cartoon emoji generator.</summary>
public enum Sprite
{
    /// <summary>A round face with two eyes and a smiling mouth.</summary>
    SmileyFace,

    /// <summary>A heart.</summary>
    Heart,

    /// <summary>A five-pointed star.</summary>
    Star,

    /// <summary>A ball with a darker stripe (so that spinning shows).</summary>
    Ball,

    /// <summary>A square.</summary>
    Square,

    /// <summary>An equilateral triangle, pointing up at rest.</summary>
    Triangle,

    /// <summary>A rhombus, taller than wide.</summary>
    Diamond,

    /// <summary>A crescent moon.</summary>
    Moon,
}

/// <summary>The named fill colours of the cartoon emoji generator.</summary>
public enum Colour
{
    /// <summary>Red.</summary>
    Red,

    /// <summary>Orange.</summary>
    Orange,

    /// <summary>Yellow.</summary>
    Yellow,

    /// <summary>Green.</summary>
    Green,

    /// <summary>Blue.</summary>
    Blue,

    /// <summary>Purple.</summary>
    Purple,

    /// <summary>Pink.</summary>
    Pink,

    /// <summary>Brown.</summary>
    Brown,
}

/// <summary>What a sprite does over a clip.</summary>
public enum Motion
{
    /// <summary>Moves from the right side of the frame to the left side.</summary>
    MoveLeft,

    /// <summary>Moves from the left side of the frame to the right side.</summary>
    MoveRight,

    /// <summary>Moves from the bottom of the frame to the top.</summary>
    MoveUp,

    /// <summary>Moves from the top of the frame to the bottom.</summary>
    MoveDown,

    /// <summary>Spins in place, one direction, up to 150 degrees over the clip.</summary>
    Rotate,

    /// <summary>Grows from half to full size in place.</summary>
    Grow,

    /// <summary>Shrinks from full to half size in place.</summary>
    Shrink,

    /// <summary>Squashes flat vertically in the middle of the clip and opens again, like an eyelid.</summary>
    Blink,
}

/// <summary>
/// The captions of the emoji generator: every caption is a template filled with a colour name, a sprite
/// name and one of the motion's phrases, e.g. "a red heart moving left", "the yellow star is spinning",
/// "a blue smiley face growing on a plain background".
/// </summary>
public static class EmojiCaptions
{
    private static readonly string[] SpriteNames = ["smiley face", "heart", "star", "ball", "square", "triangle", "diamond", "moon"];

    private static readonly string[] ColourNames = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown"];

    private static readonly string[][] MotionPhrases =
    [
        ["moving left", "sliding to the left"],
        ["moving right", "sliding to the right"],
        ["moving up", "rising"],
        ["moving down", "falling"],
        ["spinning", "rotating"],
        ["growing", "getting bigger"],
        ["shrinking", "getting smaller"],
        ["blinking", "squashing"],
    ];

    /// <summary>Number of caption templates.</summary>
    public const int TemplateCount = 3;

    /// <summary>Number of phrases per motion.</summary>
    public const int PhraseCount = 2;

    /// <summary>The sprite's name in captions ("smiley face", "heart", ...).</summary>
    public static string Name(Sprite sprite) => SpriteNames[(int)sprite];

    /// <summary>The colour's name in captions ("red", ...).</summary>
    public static string Name(Colour colour) => ColourNames[(int)colour];

    /// <summary>The phrases that describe a motion ("moving left", "sliding to the left").</summary>
    public static IReadOnlyList<string> Phrases(Motion motion) => MotionPhrases[(int)motion];

    /// <summary>The caption of <paramref name="label"/> from template <paramref name="template"/> and motion phrase <paramref name="phrase"/>.</summary>
    public static string Caption(ClipLabel label, int template = 0, int phrase = 0)
    {
        ArgumentNullException.ThrowIfNull(label);
        ArgumentOutOfRangeException.ThrowIfNegative(template);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(template, TemplateCount);
        ArgumentOutOfRangeException.ThrowIfNegative(phrase);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(phrase, PhraseCount);
        string colour = Name(label.Colour);
        string article = "aeiou".Contains(colour[0]) ? "an" : "a";
        string thing = $"{colour} {Name(label.Sprite)}";
        string doing = MotionPhrases[(int)label.Motion][phrase];
        return template switch
        {
            0 => $"{article} {thing} {doing}",
            1 => $"the {thing} is {doing}",
            _ => $"{article} {thing} {doing} on a plain background",
        };
    }

    /// <summary>Every caption the generator can produce (each label, template and phrase once).</summary>
    public static IEnumerable<string> All()
    {
        foreach (var label in AllLabels())
        {
            for (int t = 0; t < TemplateCount; t++)
            {
                for (int p = 0; p < PhraseCount; p++)
                {
                    yield return Caption(label, t, p);
                }
            }
        }
    }

    /// <summary>Every (sprite, colour, motion) combination, in enum order.</summary>
    public static IEnumerable<ClipLabel> AllLabels()
    {
        foreach (var s in Enum.GetValues<Sprite>())
        {
            foreach (var c in Enum.GetValues<Colour>())
            {
                foreach (var m in Enum.GetValues<Motion>())
                {
                    yield return new ClipLabel(s, c, m);
                }
            }
        }
    }

    /// <summary>
    /// Reads the label back from a caption or a user's prompt (any wording, case and punctuation): it
    /// needs exactly one colour name, one sprite name and phrases of one motion. False otherwise.
    /// </summary>
    public static bool TryParse(string text, [NotNullWhen(true)] out ClipLabel? label)
    {
        ArgumentNullException.ThrowIfNull(text);
        label = null;
        string[] words = Tokenizer.SplitWords(text);
        int colour = FindOne(words, ColourNames);
        int sprite = FindOne(words, SpriteNames);
        int motion = -1;
        for (int m = 0; m < MotionPhrases.Length; m++)
        {
            if (MotionPhrases[m].Any(p => Contains(words, p)))
            {
                if (motion >= 0)
                {
                    return false;
                }

                motion = m;
            }
        }

        if (colour < 0 || sprite < 0 || motion < 0)
        {
            return false;
        }

        label = new ClipLabel((Sprite)sprite, (Colour)colour, (Motion)motion);
        return true;
    }

    /// <summary>Index of the one name among <paramref name="names"/> found in <paramref name="words"/>; -1 when none or several are.</summary>
    private static int FindOne(string[] words, string[] names)
    {
        int found = -1;
        for (int i = 0; i < names.Length; i++)
        {
            if (Contains(words, names[i]))
            {
                if (found >= 0)
                {
                    return -1;
                }

                found = i;
            }
        }

        return found;
    }

    private static bool Contains(string[] words, string phraseText)
    {
        string[] phrase = phraseText.Split(' ');
        for (int start = 0; start + phrase.Length <= words.Length; start++)
        {
            if (words.AsSpan(start, phrase.Length).SequenceEqual(phrase))
            {
                return true;
            }
        }

        return false;
    }
}
