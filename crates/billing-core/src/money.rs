//! Money: a `rust_decimal` amount with an ISO 4217 currency. Never a float.
//!
//! Configuration and JSON carry amounts as strings (`"9.99"`) or integers; a float is refused
//! so that no amount is ever rounded by a binary fraction on its way in.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A lowercase three-letter ISO 4217 currency code, as Stripe writes it (`usd`, `eur`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// Why a currency code or an amount is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not three ASCII letters.
    #[error("`{0}` is not a three-letter ISO 4217 currency code")]
    BadCurrency(String),
    /// The two amounts are in different currencies.
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The amount has more decimal places than the currency's minor unit.
    #[error("{amount} has more decimal places than {currency} allows ({places})")]
    TooPrecise {
        /// The amount given.
        amount: Decimal,
        /// Its currency.
        currency: Currency,
        /// The decimal places the currency allows.
        places: u32,
    },
    /// The amount does not fit in 64-bit minor units.
    #[error("amount out of range")]
    OutOfRange,
}

/// Zero-decimal currencies as Stripe lists them.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Three-decimal currencies.
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

impl Currency {
    /// US dollars, the default currency of the shipped catalog.
    pub const USD: Currency = Currency(*b"usd");

    /// The code in lowercase.
    pub fn code(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Decimal places of the currency's minor unit (2 for usd, 0 for jpy, 3 for kwd).
    pub fn minor_unit_places(&self) -> u32 {
        let code = self.code();
        if ZERO_DECIMAL.contains(&code) {
            0
        } else if THREE_DECIMAL.contains(&code) {
            3
        } else {
            2
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(MoneyError::BadCurrency(s.to_owned()));
        }
        let mut code = [0u8; 3];
        for (slot, b) in code.iter_mut().zip(bytes) {
            *slot = b.to_ascii_lowercase();
        }
        Ok(Self(code))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// An amount of money in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// The amount in major units (`9.99` dollars).
    #[serde(with = "decimal_text")]
    pub amount: Decimal,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Builds an amount.
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// Zero in the given currency.
    pub fn zero(currency: Currency) -> Self {
        Self::new(Decimal::ZERO, currency)
    }

    /// The amount in minor units (cents), as Stripe wants it. Refuses amounts finer than
    /// the currency's minor unit instead of rounding them silently.
    pub fn to_minor_units(&self) -> Result<i64, MoneyError> {
        let places = self.currency.minor_unit_places();
        let scaled = self
            .amount
            .checked_mul(Decimal::from(10i64.pow(places)))
            .ok_or(MoneyError::OutOfRange)?;
        if scaled.fract() != Decimal::ZERO {
            return Err(MoneyError::TooPrecise {
                amount: self.amount,
                currency: self.currency,
                places,
            });
        }
        i64::try_from(scaled).map_err(|_| MoneyError::OutOfRange)
    }

    /// An amount from minor units (cents).
    pub fn from_minor_units(minor: i64, currency: Currency) -> Self {
        Self::new(Decimal::new(minor, currency.minor_unit_places()), currency)
    }

    /// Sum of two amounts in the same currency.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::OutOfRange)?;
        Ok(Money::new(amount, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Serde helpers that write a [`Decimal`] as a string and read it from a string or an
/// integer, refusing floats.
pub mod decimal_text {
    use super::*;

    /// Writes the decimal as a string.
    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    /// Reads a decimal from a string or an integer; a float is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        deserializer.deserialize_any(DecimalVisitor)
    }

    struct DecimalVisitor;

    impl Visitor<'_> for DecimalVisitor {
        type Value = Decimal;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal number written as a string, e.g. \"9.99\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
            Decimal::from_str_exact(v.trim())
                .map_err(|_| E::custom(format!("`{v}` is not a decimal number")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
            Err(E::custom(format!(
                "{v} is a float; write amounts as strings (\"{v}\") so they are exact"
            )))
        }
    }

    /// The same for an optional decimal.
    pub mod option {
        use super::*;

        /// Writes `Some` as a string and `None` as null.
        pub fn serialize<S: Serializer>(
            value: &Option<Decimal>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => serializer.serialize_str(&v.to_string()),
                None => serializer.serialize_none(),
            }
        }

        /// Reads an optional decimal.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Decimal>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapper(#[serde(with = "super")] Decimal);
            Ok(Option::<Wrapper>::deserialize(deserializer)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn minor_units_follow_the_currency() {
        let usd = Money::new(dec("9.99"), Currency::USD);
        assert_eq!(usd.to_minor_units(), Ok(999));
        let jpy = Money::new(dec("500"), "JPY".parse().unwrap());
        assert_eq!(jpy.to_minor_units(), Ok(500));
        let kwd = Money::new(dec("1.234"), "kwd".parse().unwrap());
        assert_eq!(kwd.to_minor_units(), Ok(1234));
        assert_eq!(
            Money::from_minor_units(2499, Currency::USD).amount,
            dec("24.99")
        );
    }

    #[test]
    fn sub_cent_amounts_are_refused_not_rounded() {
        let m = Money::new(dec("0.001"), Currency::USD);
        assert!(matches!(
            m.to_minor_units(),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn currencies_are_validated_and_lowercased() {
        assert_eq!("EUR".parse::<Currency>().unwrap().code(), "eur");
        assert!("dollars".parse::<Currency>().is_err());
        assert!("u$d".parse::<Currency>().is_err());
    }

    #[test]
    fn amounts_parse_from_strings_and_integers_but_not_floats() {
        let m: Money = serde_json::from_str(r#"{"amount":"9.99","currency":"usd"}"#).unwrap();
        assert_eq!(m.amount, dec("9.99"));
        let m: Money = serde_json::from_str(r#"{"amount":10,"currency":"usd"}"#).unwrap();
        assert_eq!(m.amount, dec("10"));
        let err = serde_json::from_str::<Money>(r#"{"amount":9.99,"currency":"usd"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("float"), "{err}");
    }

    #[test]
    fn adding_different_currencies_fails() {
        let a = Money::new(dec("1"), Currency::USD);
        let b = Money::new(dec("1"), "eur".parse().unwrap());
        assert!(matches!(
            a.checked_add(&b),
            Err(MoneyError::CurrencyMismatch(..))
        ));
    }
}
