//! The template expression language: the text between `[` and `]` → a syntax tree.

use crate::TemplateError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Str(String),
    Int(i64),
    Call { name: String, args: Vec<Expr> },
    Property(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "end of expression".into(),
        Some(Token::Ident(s)) => format!("'{s}'"),
        Some(Token::Str(s)) => format!("string '{s}'"),
        Some(Token::Int(i)) => format!("number {i}"),
        Some(Token::LParen) => "'('".into(),
        Some(Token::RParen) => "')'".into(),
        Some(Token::LBracket) => "'['".into(),
        Some(Token::RBracket) => "']'".into(),
        Some(Token::Comma) => "','".into(),
        Some(Token::Dot) => "'.'".into(),
    }
}

fn tokenize(src: &str) -> Result<Vec<Token>, TemplateError> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '[' | ']' | ',' | '.' => {
                tokens.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    '[' => Token::LBracket,
                    ']' => Token::RBracket,
                    ',' => Token::Comma,
                    _ => Token::Dot,
                });
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(TemplateError::expression(format!(
                                "unterminated string literal in expression '[{src}]'"
                            )))
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(s));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|d| d.is_ascii_digit()) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text.parse::<i64>().map_err(|_| {
                    TemplateError::expression(format!("number {text} is out of range in '[{src}]'"))
                })?;
                tokens.push(Token::Int(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => {
                return Err(TemplateError::expression(format!(
                    "unexpected character '{other}' in expression '[{src}]'"
                )))
            }
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn error(&self, expected: &str) -> TemplateError {
        TemplateError::expression(format!(
            "expected {expected} but found {} in expression '[{}]'",
            describe(self.peek()),
            self.src
        ))
    }

    fn expect(&mut self, want: Token, what: &str) -> Result<(), TemplateError> {
        if self.peek() == Some(&want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn expression(&mut self) -> Result<Expr, TemplateError> {
        let mut e = self.primary()?;
        loop {
            match self.peek() {
                Some(Token::Dot) => {
                    self.pos += 1;
                    match self.next() {
                        Some(Token::Ident(name)) => e = Expr::Property(Box::new(e), name),
                        _ => {
                            self.pos -= 1;
                            return Err(self.error("a property name after '.'"));
                        }
                    }
                }
                Some(Token::LBracket) => {
                    self.pos += 1;
                    let index = self.expression()?;
                    self.expect(Token::RBracket, "']'")?;
                    e = Expr::Index(Box::new(e), Box::new(index));
                }
                _ => return Ok(e),
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, TemplateError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Int(i)) => Ok(Expr::Int(i)),
            Some(Token::Ident(name)) => {
                self.expect(Token::LParen, &format!("'(' after function name '{name}'"))?;
                let mut args = Vec::new();
                if self.peek() == Some(&Token::RParen) {
                    self.pos += 1;
                } else {
                    loop {
                        args.push(self.expression()?);
                        match self.next() {
                            Some(Token::Comma) => {}
                            Some(Token::RParen) => break,
                            _ => {
                                self.pos -= 1;
                                return Err(self.error("',' or ')'"));
                            }
                        }
                    }
                }
                Ok(Expr::Call { name, args })
            }
            _ => {
                self.pos -= 1;
                Err(self.error("a function call, string or number"))
            }
        }
    }
}

/// Parses the inside of a `[…]` template expression.
pub(crate) fn parse_expression(src: &str) -> Result<Expr, TemplateError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        src,
    };
    if p.peek().is_none() {
        return Err(TemplateError::expression("empty expression '[]'"));
    }
    let e = p.expression()?;
    if p.peek().is_some() {
        return Err(p.error("end of expression"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: Vec<Expr>) -> Expr {
        Expr::Call {
            name: name.into(),
            args,
        }
    }

    #[test]
    fn parses_nested_calls_literals_and_accessors() {
        let e = parse_expression("concat(parameters('a''b'), -12).x[0]").unwrap();
        let inner = call(
            "concat",
            vec![
                call("parameters", vec![Expr::Str("a'b".into())]),
                Expr::Int(-12),
            ],
        );
        let expected = Expr::Index(
            Box::new(Expr::Property(Box::new(inner), "x".into())),
            Box::new(Expr::Int(0)),
        );
        assert_eq!(e, expected);
    }

    #[test]
    fn syntax_errors_are_expression_errors() {
        for bad in [
            "",
            "concat(",
            "concat('a' 'b')",
            "'open",
            "a.",
            "f()x",
            "1 2",
            "f(;)",
            "x",
        ] {
            let err = parse_expression(bad).unwrap_err();
            assert_eq!(err.code, "InvalidTemplateExpression", "{bad}");
        }
    }
}
