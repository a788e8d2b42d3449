//! Who is who: the one canonical form of a person's name.
//!
//! A name identifies someone wherever it is compared: self-approval, one vote per person, the quorum,
//! reserved names, the owner of tokens. It is normalised once, where it enters the service (token
//! creation, broker-token and OIDC authentication), so `Alice`, `alice` and `ａｌｉｃｅ` (fullwidth) are
//! one person everywhere after that.
//!
//! The canonical form is Unicode's identifier caseless match (Unicode 16, D146, the `NFKC_Casefold`
//! recipe): `NFKC(casefold(NFKC(name)))`. Case folding is done as `to_uppercase().to_lowercase()`,
//! which gives the full case folding of every character a name here can hold (`ß` and `SS` and `ss`
//! fold alike, so do `ς`, `Σ` and `σ`); NFKC comes from `icu_normalizer`, already in the dependency
//! tree through `idna`.

use icu_normalizer::ComposingNormalizerBorrowed;

/// Names reserved for the audit log; no token or OIDC identity may carry one (in any case or width).
pub(crate) const RESERVED: [&str; 3] = ["anonymous", "cli", "system"];

/// The canonical form of a name (see the module documentation). Idempotent.
pub(crate) fn canonical(name: &str) -> String {
    // Token names are ASCII (letters, digits, `._@-`): their canonical form is their lower case.
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let first = nfkc.normalize(name);
    let folded = first.to_uppercase().to_lowercase();
    nfkc.normalize(&folded).into_owned()
}

/// Whether two names are one person.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a == b || canonical(a) == canonical(b)
}

/// Whether `name` is, in any case or width, a name reserved for the audit log.
pub(crate) fn is_reserved(name: &str) -> bool {
    let c = canonical(name);
    RESERVED.contains(&c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_width_and_compatibility_variants_are_one_name() {
        assert_eq!(canonical("Alice"), "alice");
        assert_eq!(canonical("ALICE"), "alice");
        // Fullwidth letters (NFKC) and the Kelvin sign K (U+212A, NFKC to K).
        assert_eq!(canonical("ＡＬＩＣＥ"), "alice");
        assert_eq!(canonical("\u{212A}en"), "ken");
        // Full case folding: sharp s, final sigma.
        assert_eq!(canonical("Straße"), canonical("STRASSE"));
        assert_eq!(canonical("ΟΔΥΣΣΕΥΣ"), canonical("οδυσσευς"));
        assert_eq!(canonical("Οδυσσεύς"), canonical("ΟΔΥΣΣΕΎΣ"));
        // Composed and decomposed forms.
        assert_eq!(canonical("e\u{301}mile"), canonical("\u{c9}MILE"));
        // Ligatures.
        assert_eq!(canonical("\u{FB01}ona"), "fiona");
        assert!(same("oidc:Bob", "oidc:bob"));
        assert!(!same("bob", "rob"));
    }

    #[test]
    fn canonical_is_idempotent() {
        for n in [
            "Alice",
            "ＡＬＩＣＥ",
            "Straße",
            "ΟΔΥΣΣΕΥΣ",
            "\u{212B}ngstr\u{f6}m",
            "i\u{307}",
            "İstanbul",
            "ǅemal",
        ] {
            let c = canonical(n);
            assert_eq!(canonical(&c), c, "{n}");
        }
    }

    #[test]
    fn reserved_names_in_any_case_or_width() {
        for n in [
            "cli",
            "CLI",
            "Cli",
            "Anonymous",
            "SYSTEM",
            "ｃｌｉ",
            "ＡＮＯＮＹＭＯＵＳ",
        ] {
            assert!(is_reserved(n), "{n}");
        }
        assert!(!is_reserved("client"));
    }
}
