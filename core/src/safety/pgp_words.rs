//! The PGP word list (Juola & Zimmermann, 1995; refined for PGP by Jon Callas).
//!
//! Two lists of 256 words each map a byte to a phonetically distinct English word:
//! [`EVEN_WORDS`] (two syllables) encodes bytes at even positions (0, 2, 4, …) and
//! [`ODD_WORDS`] (three syllables) encodes bytes at odd positions. Alternating the
//! lists lets a listener notice a dropped, repeated or swapped word: the syllable
//! rhythm breaks.
//!
//! This is the list given in the PGPFreeware 6.5.1 manual (Appendix D) and used by
//! PGP fingerprint tools and ZRTP (RFC 6189) implementations. A few copies circulate
//! that differ in some words (for example `basalt` instead of `banjo` at `0x17`,
//! attributed to the older PGPfone manual); Conclave uses the PGP list.
//! The unit tests pin the exact contents with a SHA-256 so that an accidental edit
//! is caught.

/// Two-syllable words, indexed by byte value, for bytes at **even** positions.
///
/// `EVEN_WORDS[0x00]` is `"aardvark"`, `EVEN_WORDS[0xFF]` is `"Zulu"`.
#[rustfmt::skip]
pub static EVEN_WORDS: [&str; 256] = [
    // 0x00
    "aardvark", "absurd", "accrue", "acme", "adrift", "adult", "afflict", "ahead",
    // 0x08
    "aimless", "Algol", "allow", "alone", "ammo", "ancient", "apple", "artist",
    // 0x10
    "assume", "Athens", "atlas", "Aztec", "baboon", "backfield", "backward", "banjo",
    // 0x18
    "beaming", "bedlamp", "beehive", "beeswax", "befriend", "Belfast", "berserk", "billiard",
    // 0x20
    "bison", "blackjack", "blockade", "blowtorch", "bluebird", "bombast", "bookshelf", "brackish",
    // 0x28
    "breadline", "breakup", "brickyard", "briefcase", "Burbank", "button", "buzzard", "cement",
    // 0x30
    "chairlift", "chatter", "checkup", "chisel", "choking", "chopper", "Christmas", "clamshell",
    // 0x38
    "classic", "classroom", "cleanup", "clockwork", "cobra", "commence", "concert", "cowbell",
    // 0x40
    "crackdown", "cranky", "crowfoot", "crucial", "crumpled", "crusade", "cubic", "dashboard",
    // 0x48
    "deadbolt", "deckhand", "dogsled", "dragnet", "drainage", "dreadful", "drifter", "dropper",
    // 0x50
    "drumbeat", "drunken", "Dupont", "dwelling", "eating", "edict", "egghead", "eightball",
    // 0x58
    "endorse", "endow", "enlist", "erase", "escape", "exceed", "eyeglass", "eyetooth",
    // 0x60
    "facial", "fallout", "flagpole", "flatfoot", "flytrap", "fracture", "framework", "freedom",
    // 0x68
    "frighten", "gazelle", "Geiger", "glitter", "glucose", "goggles", "goldfish", "gremlin",
    // 0x70
    "guidance", "hamlet", "highchair", "hockey", "indoors", "indulge", "inverse", "involve",
    // 0x78
    "island", "jawbone", "keyboard", "kickoff", "kiwi", "klaxon", "locale", "lockup",
    // 0x80
    "merit", "minnow", "miser", "Mohawk", "mural", "music", "necklace", "Neptune",
    // 0x88
    "newborn", "nightbird", "Oakland", "obtuse", "offload", "optic", "orca", "payday",
    // 0x90
    "peachy", "pheasant", "physique", "playhouse", "Pluto", "preclude", "prefer", "preshrunk",
    // 0x98
    "printer", "prowler", "pupil", "puppy", "python", "quadrant", "quiver", "quota",
    // 0xA0
    "ragtime", "ratchet", "rebirth", "reform", "regain", "reindeer", "rematch", "repay",
    // 0xA8
    "retouch", "revenge", "reward", "rhythm", "ribcage", "ringbolt", "robust", "rocker",
    // 0xB0
    "ruffled", "sailboat", "sawdust", "scallion", "scenic", "scorecard", "Scotland", "seabird",
    // 0xB8
    "select", "sentence", "shadow", "shamrock", "showgirl", "skullcap", "skydive", "slingshot",
    // 0xC0
    "slowdown", "snapline", "snapshot", "snowcap", "snowslide", "solo", "southward", "soybean",
    // 0xC8
    "spaniel", "spearhead", "spellbind", "spheroid", "spigot", "spindle", "spyglass", "stagehand",
    // 0xD0
    "stagnate", "stairway", "standard", "stapler", "steamship", "sterling", "stockman", "stopwatch",
    // 0xD8
    "stormy", "sugar", "surmount", "suspense", "sweatband", "swelter", "tactics", "talon",
    // 0xE0
    "tapeworm", "tempest", "tiger", "tissue", "tonic", "topmost", "tracker", "transit",
    // 0xE8
    "trauma", "treadmill", "Trojan", "trouble", "tumor", "tunnel", "tycoon", "uncut",
    // 0xF0
    "unearth", "unwind", "uproot", "upset", "upshot", "vapor", "village", "virus",
    // 0xF8
    "Vulcan", "waffle", "wallet", "watchword", "wayside", "willow", "woodlark", "Zulu",
];

/// Three-syllable words, indexed by byte value, for bytes at **odd** positions.
///
/// `ODD_WORDS[0x00]` is `"adroitness"`, `ODD_WORDS[0xFF]` is `"Yucatan"`.
#[rustfmt::skip]
pub static ODD_WORDS: [&str; 256] = [
    // 0x00
    "adroitness", "adviser", "aftermath", "aggregate", "alkali", "almighty", "amulet", "amusement",
    // 0x08
    "antenna", "applicant", "Apollo", "armistice", "article", "asteroid", "Atlantic", "atmosphere",
    // 0x10
    "autopsy", "Babylon", "backwater", "barbecue", "belowground", "bifocals", "bodyguard", "bookseller",
    // 0x18
    "borderline", "bottomless", "Bradbury", "bravado", "Brazilian", "breakaway", "Burlington", "businessman",
    // 0x20
    "butterfat", "Camelot", "candidate", "cannonball", "Capricorn", "caravan", "caretaker", "celebrate",
    // 0x28
    "cellulose", "certify", "chambermaid", "Cherokee", "Chicago", "clergyman", "coherence", "combustion",
    // 0x30
    "commando", "company", "component", "concurrent", "confidence", "conformist", "congregate", "consensus",
    // 0x38
    "consulting", "corporate", "corrosion", "councilman", "crossover", "crucifix", "cumbersome", "customer",
    // 0x40
    "Dakota", "decadence", "December", "decimal", "designing", "detector", "detergent", "determine",
    // 0x48
    "dictator", "dinosaur", "direction", "disable", "disbelief", "disruptive", "distortion", "document",
    // 0x50
    "embezzle", "enchanting", "enrollment", "enterprise", "equation", "equipment", "escapade", "Eskimo",
    // 0x58
    "everyday", "examine", "existence", "exodus", "fascinate", "filament", "finicky", "forever",
    // 0x60
    "fortitude", "frequency", "gadgetry", "Galveston", "getaway", "glossary", "gossamer", "graduate",
    // 0x68
    "gravity", "guitarist", "hamburger", "Hamilton", "handiwork", "hazardous", "headwaters", "hemisphere",
    // 0x70
    "hesitate", "hideaway", "holiness", "hurricane", "hydraulic", "impartial", "impetus", "inception",
    // 0x78
    "indigo", "inertia", "infancy", "inferno", "informant", "insincere", "insurgent", "integrate",
    // 0x80
    "intention", "inventive", "Istanbul", "Jamaica", "Jupiter", "leprosy", "letterhead", "liberty",
    // 0x88
    "maritime", "matchmaker", "maverick", "Medusa", "megaton", "microscope", "microwave", "midsummer",
    // 0x90
    "millionaire", "miracle", "misnomer", "molasses", "molecule", "Montana", "monument", "mosquito",
    // 0x98
    "narrative", "nebula", "newsletter", "Norwegian", "October", "Ohio", "onlooker", "opulent",
    // 0xA0
    "Orlando", "outfielder", "Pacific", "pandemic", "Pandora", "paperweight", "paragon", "paragraph",
    // 0xA8
    "paramount", "passenger", "pedigree", "Pegasus", "penetrate", "perceptive", "performance", "pharmacy",
    // 0xB0
    "phonetic", "photograph", "pioneer", "pocketful", "politeness", "positive", "potato", "processor",
    // 0xB8
    "provincial", "proximate", "puberty", "publisher", "pyramid", "quantity", "racketeer", "rebellion",
    // 0xC0
    "recipe", "recover", "repellent", "replica", "reproduce", "resistor", "responsive", "retraction",
    // 0xC8
    "retrieval", "retrospect", "revenue", "revival", "revolver", "sandalwood", "sardonic", "Saturday",
    // 0xD0
    "savagery", "scavenger", "sensation", "sociable", "souvenir", "specialist", "speculate", "stethoscope",
    // 0xD8
    "stupendous", "supportive", "surrender", "suspicious", "sympathy", "tambourine", "telephone", "therapist",
    // 0xE0
    "tobacco", "tolerance", "tomorrow", "torpedo", "tradition", "travesty", "trombonist", "truncated",
    // 0xE8
    "typewriter", "ultimate", "undaunted", "underfoot", "unicorn", "unify", "universe", "unravel",
    // 0xF0
    "upcoming", "vacancy", "vagabond", "vertigo", "Virginia", "visitor", "vocalist", "voyager",
    // 0xF8
    "warranty", "Waterloo", "whimsical", "Wichita", "Wilmington", "Wyoming", "yesteryear", "Yucatan",
];

/// The two-syllable word for `byte` at an even position.
#[must_use]
pub fn even_word(byte: u8) -> &'static str {
    // Invariant: the array has exactly 256 entries and `usize::from(u8)` is at most
    // 255, so this index is always in range.
    #[allow(clippy::indexing_slicing)]
    EVEN_WORDS[usize::from(byte)]
}

/// The three-syllable word for `byte` at an odd position.
#[must_use]
pub fn odd_word(byte: u8) -> &'static str {
    // Invariant: the array has exactly 256 entries and `usize::from(u8)` is at most
    // 255, so this index is always in range.
    #[allow(clippy::indexing_slicing)]
    ODD_WORDS[usize::from(byte)]
}

/// Encodes `bytes` as PGP words, alternating [`even_word`] and [`odd_word`] by
/// position (the first byte uses the even list).
pub fn encode(bytes: &[u8]) -> impl Iterator<Item = &'static str> + '_ {
    bytes.iter().enumerate().map(|(position, &byte)| {
        if position % 2 == 0 {
            even_word(byte)
        } else {
            odd_word(byte)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::collections::HashSet;

    #[test]
    fn list_ends_are_the_published_ones() {
        assert_eq!(EVEN_WORDS[0x00], "aardvark");
        assert_eq!(ODD_WORDS[0x00], "adroitness");
        assert_eq!(EVEN_WORDS[0xFF], "Zulu");
        assert_eq!(ODD_WORDS[0xFF], "Yucatan");
    }

    /// Entries checked against four independent copies (see the commit message) and
    /// the sample table of the "biometric word list" encyclopedia article.
    #[test]
    fn middle_entries_match_published_list() {
        let pinned: [(u8, &str, &str); 12] = [
            (0x0D, "ancient", "asteroid"),
            (0x17, "banjo", "bookseller"),
            (0x20, "bison", "butterfat"),
            (0x29, "breakup", "certify"),
            (0x38, "classic", "consulting"),
            (0x41, "cranky", "decadence"),
            (0x6B, "glitter", "Hamilton"),
            (0x7F, "lockup", "integrate"),
            (0x80, "merit", "intention"),
            (0xA7, "repay", "paragraph"),
            (0xD2, "standard", "sensation"),
            (0xFE, "woodlark", "yesteryear"),
        ];
        for (byte, even, odd) in pinned {
            assert_eq!(even_word(byte), even, "even word for {byte:#04x}");
            assert_eq!(odd_word(byte), odd, "odd word for {byte:#04x}");
        }
    }

    #[test]
    fn all_512_words_are_distinct_ignoring_case() {
        let words: HashSet<String> = EVEN_WORDS
            .iter()
            .chain(ODD_WORDS.iter())
            .map(|w| w.to_ascii_lowercase())
            .collect();
        assert_eq!(words.len(), 512);
    }

    #[test]
    fn words_are_plain_ascii_letters() {
        for word in EVEN_WORDS.iter().chain(ODD_WORDS.iter()) {
            assert!(!word.is_empty());
            assert!(word.bytes().all(|b| b.is_ascii_alphabetic()), "{word:?}");
        }
    }

    /// SHA-256 over all 512 words (even list then odd list) joined with `\n`, no
    /// trailing newline. Computed once from the verified list.
    #[test]
    fn list_contents_are_pinned_by_hash() {
        let joined = EVEN_WORDS
            .iter()
            .chain(ODD_WORDS.iter())
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            hex::encode(Sha256::digest(joined.as_bytes())),
            "e9b7b0052233a74aa56724ed3f79c272036aed68d8f4c0856e833c8043b9ac62"
        );
    }

    /// Fingerprint encodings published by three independent implementations
    /// (Encode::Wordlist::PGP's test suite, ruby-pgp-word-list's README and
    /// pgp-words' README).
    #[test]
    fn encodes_fingerprints_like_other_implementations() {
        let cases = [
            (
                "41559711308F2A21B9D5072D621958AFCB50B5F9",
                "cranky equipment preshrunk Babylon chairlift midsummer brickyard Camelot \
                 sentence specialist ahead clergyman flagpole bottomless endorse pharmacy \
                 spheroid embezzle scorecard Waterloo",
            ),
            (
                "D1D464C004F00FB5C9A4C8D8E433E7FB7FF56256",
                "stairway souvenir flytrap recipe adrift upcoming artist positive spearhead \
                 Pandora spaniel stupendous tonic concurrent transit Wichita lockup visitor \
                 flagpole escapade",
            ),
            (
                "EA5B81C564988C73EE90DEE9BAF1E07233CDE511",
                "Trojan exodus minnow resistor flytrap narrative offload hurricane tycoon \
                 millionaire tactics ultimate shadow vacancy tapeworm holiness chisel \
                 sandalwood topmost Babylon",
            ),
        ];
        for (fingerprint, expected) in cases {
            let bytes = hex::decode(fingerprint).expect("valid hex");
            assert_eq!(encode(&bytes).collect::<Vec<_>>().join(" "), expected);
        }
    }
}
