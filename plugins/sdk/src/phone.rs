//! Phone numbers in the forms CRMs store them. Deliberately not a libphonenumber port: the
//! `phonenumber` crate needs about 54 ms (native, release) to load its metadata and compile
//! its patterns on the first number it parses, and every call runs in a fresh instance, so
//! every call would pay it: fifty times a whole call's cost here. These rules cover what
//! chats carry (international numbers, with `+` or `00`, or national ones with a trunk `0`)
//! without validating numbering plans; an adapter that needs full validation can depend on
//! `phonenumber` itself, at that price.

/// One number in the forms a CRM may store or search by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    /// `+972501234567`
    pub e164: String,
    /// The international number as digits: `972501234567` (what WhatsApp ids are).
    pub international: String,
    /// The national form with its trunk prefix, when the number is in `calling_code`'s
    /// country: `0501234567`.
    pub national: Option<String>,
}

impl Phone {
    /// The number's digits as written, `None` when it has none: the "digits only" form that
    /// CRMs matching leniently store and search by (`+972-50-123 4567` -> `972501234567`,
    /// `050-123-4567` -> `0501234567`). Unlike [`Phone::parse`] it assumes no country and
    /// rewrites nothing.
    pub fn digits(raw: &str) -> Option<String> {
        Some(crate::digits_only(raw)).filter(|d| !d.is_empty())
    }

    /// Reads a number written any way (`+972-50-123 4567`, `00972…`, `050-123-4567`,
    /// `972501234567`), taking national numbers (a leading `0`) to be in the country of
    /// `calling_code` (digits, `972`: a tenant's crmConfig says which). `None` when it holds
    /// fewer than 7 or more than 15 digits (E.164's most).
    pub fn parse(raw: &str, calling_code: &str) -> Option<Phone> {
        let trimmed = raw.trim();
        let digits = crate::digits_only(trimmed);
        let code = crate::digits_only(calling_code);
        let international = if trimmed.starts_with('+') {
            digits
        } else if let Some(rest) = digits.strip_prefix("00") {
            rest.to_string()
        } else if let Some(national) = digits.strip_prefix('0') {
            format!("{code}{national}")
        } else if !code.is_empty() && digits.starts_with(&code) && digits.len() > code.len() + 6 {
            digits
        } else {
            format!("{code}{digits}")
        };
        if !(7..=15).contains(&international.len()) {
            return None;
        }
        let national = (!code.is_empty()).then(|| international.strip_prefix(code.as_str()).map(|n| format!("0{n}"))).flatten();
        Some(Phone { e164: format!("+{international}"), international, national })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_of_writing_a_number_reads_the_same() {
        let dana = Phone { e164: "+972501234567".into(), international: "972501234567".into(), national: Some("0501234567".into()) };
        for raw in ["+972-50-123 4567", "00972501234567", "050-123-4567", "972501234567", "(050) 1234567", " +972 (50) 123-4567 "] {
            assert_eq!(Phone::parse(raw, "972").as_ref(), Some(&dana), "{raw}");
        }
        let abroad = Phone::parse("+1 415 555 0100", "972").unwrap();
        assert_eq!((abroad.e164.as_str(), abroad.national), ("+14155550100", None), "another country has no national form here");
        assert_eq!(Phone::parse("123", "972"), None);
        assert_eq!(Phone::digits(" 050-123 4567 ").as_deref(), Some("0501234567"), "as written, no country assumed");
        assert_eq!(Phone::digits("+"), None);
        assert_eq!(Phone::parse("+1234567890123456", "972"), None, "over 15 digits");
    }
}
