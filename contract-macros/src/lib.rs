//! One declaration per limit: `#[schema_from_validate]` on a request body reads each field's
//! `#[validate(...)]` rules and adds the matching `#[schema(...)]` bounds, so the limit the
//! server enforces and the limit the contract publishes are the same token.
//!
//! | `#[validate(...)]`              | `#[schema(...)]` on text     | on a list / a map            |
//! |---------------------------------|------------------------------|------------------------------|
//! | `length(min = A, max = B)`      | `min_length`, `max_length`   | `min_items`, `max_items` / `min_properties`, `max_properties` |
//! | `length(equal = N)`             | both bounds `N`              | both bounds `N`              |
//! | `range(min = A, max = B)`       | `minimum`, `maximum`         |                              |
//! | `range(exclusive_min/max = A)`  | `exclusive_minimum/maximum`  |                              |
//! | `email`                         | `format = Email`             |                              |
//!
//! Other rules (`custom`, `nested`, `regex`...) are left to the field's own annotations. A field
//! that states one of the generated bounds itself is a compile error: the limit would be
//! declared twice. The attribute goes above `#[derive(...)]`.

use proc_macro::TokenStream;
use proc_macro2::{TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote};
use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Expr, Fields, Type};

#[proc_macro_attribute]
pub fn schema_from_validate(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(
            TokenStream2::from(args).span(),
            "schema_from_validate takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let mut input = parse_macro_input!(item as DeriveInput);
    let result = match &mut input.data {
        Data::Struct(data) => match &mut data.fields {
            Fields::Named(fields) => fields.named.iter_mut().try_for_each(add_bounds),
            _ => Err(syn::Error::new(
                input.ident.span(),
                "schema_from_validate needs named fields",
            )),
        },
        _ => Err(syn::Error::new(
            input.ident.span(),
            "schema_from_validate applies to structs",
        )),
    };
    match result {
        Ok(()) => quote!(#input).into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// What the field's type holds, for what a `length` bounds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    List,
    Map,
}

fn shape_of(ty: &Type) -> Shape {
    let Type::Path(path) = ty else {
        return Shape::Text;
    };
    let Some(last) = path.path.segments.last() else {
        return Shape::Text;
    };
    match last.ident.to_string().as_str() {
        // Option<T> and Option<Option<T>> (a merge patch) bound their T.
        "Option" => match &last.arguments {
            syn::PathArguments::AngleBracketed(args) => match args.args.first() {
                Some(syn::GenericArgument::Type(inner)) => shape_of(inner),
                _ => Shape::Text,
            },
            _ => Shape::Text,
        },
        "Vec" | "HashSet" | "BTreeSet" => Shape::List,
        "HashMap" | "BTreeMap" | "Map" => Shape::Map,
        _ => Shape::Text,
    }
}

fn add_bounds(field: &mut syn::Field) -> syn::Result<()> {
    let shape = shape_of(&field.ty);
    let mut bounds: Vec<(&'static str, TokenStream2)> = Vec::new();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("validate")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("length") {
                let (min_name, max_name) = match shape {
                    Shape::Text => ("min_length", "max_length"),
                    Shape::List => ("min_items", "max_items"),
                    Shape::Map => ("min_properties", "max_properties"),
                };
                meta.parse_nested_meta(|rule| {
                    let value: Expr = rule.value()?.parse()?;
                    if rule.path.is_ident("min") {
                        bounds.push((min_name, quote!(#value)));
                    } else if rule.path.is_ident("max") {
                        bounds.push((max_name, quote!(#value)));
                    } else if rule.path.is_ident("equal") {
                        bounds.push((min_name, quote!(#value)));
                        bounds.push((max_name, quote!(#value)));
                    }
                    Ok(())
                })
            } else if meta.path.is_ident("range") {
                meta.parse_nested_meta(|rule| {
                    let value: Expr = rule.value()?.parse()?;
                    for (rule_name, schema_name) in [
                        ("min", "minimum"),
                        ("max", "maximum"),
                        ("exclusive_min", "exclusive_minimum"),
                        ("exclusive_max", "exclusive_maximum"),
                    ] {
                        if rule.path.is_ident(rule_name) {
                            bounds.push((schema_name, quote!(#value)));
                        }
                    }
                    Ok(())
                })
            } else if meta.path.is_ident("email") {
                bounds.push(("format", quote!(Email)));
                skip_arguments(meta.input)
            } else {
                skip_arguments(meta.input)
            }
        })?;
    }
    if bounds.is_empty() {
        return Ok(());
    }
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("schema")) {
        for stated in stated_keys(attr)? {
            if let Some((name, _)) = bounds.iter().find(|(name, _)| stated == *name) {
                return Err(syn::Error::new(
                    stated.span(),
                    format!(
                        "`{name}` follows from this field's #[validate(...)]; declare the limit once, there"
                    ),
                ));
            }
        }
    }
    let pairs = bounds.iter().map(|(name, value)| {
        let name = format_ident!("{}", name);
        quote!(#name = #value)
    });
    let generated: Attribute = syn::parse_quote!(#[schema(#(#pairs),*)]);
    field.attrs.push(generated);
    Ok(())
}

/// Skips what follows a rule we do not translate: `(...)` or `= value`.
fn skip_arguments(input: ParseStream) -> syn::Result<()> {
    if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        content.parse::<TokenStream2>()?;
    } else if input.peek(syn::Token![=]) {
        input.parse::<syn::Token![=]>()?;
        input.parse::<Expr>()?;
    }
    Ok(())
}

/// The `key = ...` names an existing `#[schema(...)]` states at its top level.
fn stated_keys(attr: &Attribute) -> syn::Result<Vec<proc_macro2::Ident>> {
    let list = attr.meta.require_list()?;
    let tokens: Vec<TokenTree> = list.tokens.clone().into_iter().collect();
    let mut keys = Vec::new();
    for pair in tokens.windows(2) {
        if let [TokenTree::Ident(ident), TokenTree::Punct(punct)] = pair {
            if punct.as_char() == '=' {
                keys.push(ident.clone());
            }
        }
    }
    Ok(keys)
}
