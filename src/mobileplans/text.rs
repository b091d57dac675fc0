//! The portal's words in its languages (the language of
//! `Accept-Language`: English and French). [MP-Portal]:
//! "Accept-Language (for example en-us). The portal should render in that
//! language."

/// A language the portal speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// French.
    Fr,
}

impl Lang {
    /// The BCP 47 tag (`lang`, `Content-Language`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }

    /// The best language for an `Accept-Language` header (RFC 9110
    /// §12.5.4): the supported one with the highest weight, English when
    /// none is.
    pub fn negotiate(header: Option<&str>) -> Lang {
        let mut best: Option<(f32, usize, Lang)> = None;
        for (i, part) in header.unwrap_or("").split(',').enumerate() {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "en" => Lang::En,
                "fr" => Lang::Fr,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, bi, _)| q > bq || (q == bq && i < bi)) {
                best = Some((q, i, lang));
            }
        }
        best.map(|(_, _, l)| l).unwrap_or(Lang::En)
    }
}

/// Every phrase of the portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "each variant is the phrase it names")]
pub enum T {
    Title,
    ChoosePlan,
    NewEsim,
    TopUp,
    ActivateSim,
    Continue,
    Cancel,
    Buy,
    YourOrder,
    Account,
    AccountNew,
    AccountExisting,
    DataValid,
    Price,
    Thanks,
    Installing,
    ReadyAt,
    RegistersLater,
    BalanceAdded,
    Withdraw,
    CancelPurchase,
    Cancelled,
    Withdrawn,
    LpaError,
    Retry,
    Error,
    UnknownSim,
    BadLaunch,
    Network,
    Activation,
    Support,
    Privacy,
    Terms,
    NoPlans,
    NoApp,
    AlreadyDone,
    Forbidden,
    TooMany,
    TooManyOpen,
    Payment,
    Pay,
    PayBefore,
    AwaitingOperator,
    Refresh,
}

/// The phrase in a language. `{}` marks where a value goes.
pub fn tr(lang: Lang, t: T) -> &'static str {
    let (en, fr) = match t {
        T::Title => ("Mobile plans", "Forfaits mobiles"),
        T::ChoosePlan => ("Choose a plan", "Choisissez un forfait"),
        T::NewEsim => ("New eSIM line", "Nouvelle ligne eSIM"),
        T::TopUp => ("Add data to line {}", "Ajouter des données à la ligne {}"),
        T::ActivateSim => ("Activate your SIM card", "Activez votre carte SIM"),
        T::Continue => ("Continue", "Continuer"),
        T::Cancel => ("Cancel", "Annuler"),
        T::Buy => ("Buy", "Acheter"),
        T::YourOrder => ("Your order", "Votre commande"),
        T::Account => ("Account", "Compte"),
        T::AccountNew => ("I am a new customer", "Je suis un nouveau client"),
        T::AccountExisting => ("I already have an account", "J'ai déjà un compte"),
        T::DataValid => ("{} MB, valid {} days", "{} Mo, validité {} j"),
        T::Price => ("Price", "Prix"),
        T::Thanks => (
            "Thank you! Your purchase is complete.",
            "Merci ! Votre achat est terminé.",
        ),
        T::Installing => (
            "Your eSIM is being downloaded and installed.",
            "Votre eSIM est en cours de téléchargement et d'installation.",
        ),
        T::ReadyAt => (
            "Your eSIM can be installed from {} (UTC); Windows will tell you.",
            "Votre eSIM pourra être installée à partir de {} (UTC) ; Windows vous préviendra.",
        ),
        T::RegistersLater => (
            "Your device joins the network in about {} minutes.",
            "Votre appareil rejoindra le réseau dans environ {} minutes.",
        ),
        T::BalanceAdded => ("Your data was added.", "Vos données ont été ajoutées."),
        T::Withdraw => ("Withdraw this offer", "Retirer cette offre"),
        T::CancelPurchase => ("Cancel purchase", "Annuler l'achat"),
        T::Cancelled => ("Your purchase was cancelled.", "Votre achat a été annulé."),
        T::Withdrawn => (
            "The offer was withdrawn; nothing will be installed.",
            "L'offre a été retirée ; rien ne sera installé.",
        ),
        T::LpaError => (
            "Your last eSIM download did not complete",
            "Votre dernier téléchargement eSIM n'a pas abouti",
        ),
        T::Retry => ("Retry the download", "Relancer le téléchargement"),
        T::Error => ("Something went wrong", "Une erreur s'est produite"),
        T::UnknownSim => (
            "This SIM card is not one of ours.",
            "Cette carte SIM n'est pas l'une des nôtres.",
        ),
        T::BadLaunch => (
            "Open this page from the Mobile Plans app.",
            "Ouvrez cette page depuis l'application Forfaits mobiles.",
        ),
        T::Network => ("Network", "Réseau"),
        T::Activation => ("Activation", "Activation"),
        T::Support => ("Support", "Assistance"),
        T::Privacy => ("Privacy", "Confidentialité"),
        T::Terms => ("Terms", "Conditions"),
        T::NoPlans => (
            "No plan is available here.",
            "Aucun forfait n'est disponible ici.",
        ),
        T::NoApp => (
            "The Mobile Plans app was not detected.",
            "L'application Forfaits mobiles n'a pas été détectée.",
        ),
        T::AlreadyDone => (
            "This purchase is already complete.",
            "Cet achat est déjà terminé.",
        ),
        T::TooMany => (
            "Too many purchases were made from here. Please try again in a few minutes.",
            "Trop d'achats ont été faits depuis cet appareil. Réessayez dans quelques minutes.",
        ),
        T::TooManyOpen => (
            "This device already has purchases waiting to be completed. Complete or cancel them first.",
            "Cet appareil a déjà des achats en attente. Terminez-les ou annulez-les d'abord.",
        ),
        T::Payment => ("Confirm your payment", "Confirmez votre paiement"),
        T::Pay => ("Pay", "Payer"),
        T::PayBefore => (
            "Your plan is reserved until {} UTC. Pay to receive it.",
            "Votre forfait est réservé jusqu'au {} UTC. Payez pour le recevoir.",
        ),
        T::AwaitingOperator => (
            "Your plan is reserved until {} UTC, waiting for your payment to be confirmed.",
            "Votre forfait est réservé jusqu'au {} UTC, en attente de la confirmation de votre paiement.",
        ),
        T::Refresh => ("Check again", "Vérifier à nouveau"),
        T::Forbidden => (
            "This page has expired or was not opened from your purchase. Start again from the Mobile Plans app.",
            "Cette page a expiré ou n'a pas été ouverte depuis votre achat. Recommencez depuis l'application Forfaits mobiles.",
        ),
    };
    match lang {
        Lang::En => en,
        Lang::Fr => fr,
    }
}

/// A phrase with its `{}` replaced by `args` in order.
pub fn fill(lang: Lang, t: T, args: &[&str]) -> String {
    let mut out = String::new();
    let mut rest = tr(lang, t);
    for a in args {
        match rest.split_once("{}") {
            Some((head, tail)) => {
                out.push_str(head);
                out.push_str(a);
                rest = tail;
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported() {
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::negotiate(Some("en-us")), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr-FR,fr;q=0.9,en;q=0.8")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some("de-DE,fr;q=0.5,en;q=0.7")), Lang::En);
        assert_eq!(Lang::negotiate(Some("de, fr;q=0.1")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some("fr;q=0, en;q=0.1")), Lang::En);
    }

    #[test]
    fn fill_places_values() {
        assert_eq!(
            fill(Lang::Fr, T::DataValid, &["500", "1"]),
            "500 Mo, validité 1 j"
        );
    }
}
