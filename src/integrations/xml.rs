//! XML to JSON-like maps, for the AWS Query and S3 APIs: the shape scripts read with `xml_parse`.
//!
//! An element with child elements becomes a map of them (a name that repeats becomes an array in
//! document order), an element with only text becomes its text, an empty one `""`. Attributes are
//! kept as `"@name"` keys; when an element has attributes and text, the text is under `"#text"`.
//! Namespaces prefixes are dropped (`<s3:Bucket>` is `Bucket`).

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// Parses `text` into `{ root name: content }`.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut reader = Reader::from_str(text);
    // Text is kept whole (an entity splits it into pieces) and trimmed when its element closes.
    reader.config_mut().trim_text(false);
    // The stack of open elements: name, attributes, children and text so far.
    let mut stack: Vec<Open> = vec![Open::new("#document".into(), Map::new())];
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("not valid XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(start) => stack.push(Open::from_start(&start)?),
            Event::Empty(start) => {
                let open = Open::from_start(&start)?;
                let (name, value) = open.close();
                stack
                    .last_mut()
                    .expect("the document is open")
                    .add(name, value);
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err("not valid XML: a closing tag without an opening one".into());
                }
                let (name, value) = stack.pop().expect("checked above").close();
                stack
                    .last_mut()
                    .expect("the document is open")
                    .add(name, value);
            }
            Event::Text(text) => {
                let text = text
                    .decode()
                    .map_err(|e| format!("not valid XML text: {e}"))?;
                let text = quick_xml::escape::unescape(&text)
                    .map_err(|e| format!("not valid XML text: {e}"))?;
                stack
                    .last_mut()
                    .expect("the document is open")
                    .text
                    .push_str(&text);
            }
            Event::CData(data) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                stack
                    .last_mut()
                    .expect("the document is open")
                    .text
                    .push_str(&text);
            }
            Event::GeneralRef(reference) => {
                let name = reference
                    .decode()
                    .map_err(|e| format!("not valid XML text: {e}"))?;
                let resolved = match name.as_ref() {
                    "amp" => "&".to_owned(),
                    "lt" => "<".to_owned(),
                    "gt" => ">".to_owned(),
                    "quot" => "\"".to_owned(),
                    "apos" => "'".to_owned(),
                    other => {
                        let code = other
                            .strip_prefix("#x")
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .or_else(|| other.strip_prefix('#').and_then(|d| d.parse().ok()))
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("not valid XML: unknown entity `&{other};`"))?;
                        code.to_string()
                    }
                };
                stack
                    .last_mut()
                    .expect("the document is open")
                    .text
                    .push_str(&resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err("not valid XML: an element is not closed".into());
    }
    let document = stack.pop().expect("one left");
    match document.children {
        Some(children) if children.len() == 1 => Ok(Value::Object(children)),
        _ => Err("not valid XML: expected exactly one root element".into()),
    }
}

struct Open {
    name: String,
    attributes: Map<String, Value>,
    children: Option<Map<String, Value>>,
    text: String,
}

impl Open {
    fn new(name: String, attributes: Map<String, Value>) -> Open {
        Open {
            name,
            attributes,
            children: None,
            text: String::new(),
        }
    }

    fn from_start(start: &BytesStart) -> Result<Open, String> {
        let name = local_name(start.name().as_ref());
        let mut attributes = Map::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| format!("not valid XML attribute: {e}"))?;
            let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
            if key == "xmlns" || key.starts_with("xmlns:") {
                continue;
            }
            let value = attribute
                .unescape_value()
                .map_err(|e| format!("not valid XML attribute: {e}"))?;
            attributes.insert(
                format!("@{}", local_name(key.as_bytes())),
                Value::String(value.into_owned()),
            );
        }
        Ok(Open::new(name, attributes))
    }

    fn add(&mut self, name: String, value: Value) {
        let children = self.children.get_or_insert_with(Map::new);
        match children.get_mut(&name) {
            Some(Value::Array(items)) if items_are_repeats(items) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
                mark_repeats(existing);
            }
            None => {
                children.insert(name, value);
            }
        }
    }

    fn close(self) -> (String, Value) {
        let value = match (self.children, self.attributes.is_empty()) {
            (Some(mut children), _) => {
                unmark(&mut children);
                let mut all = self.attributes;
                all.extend(children);
                Value::Object(all)
            }
            (None, true) => Value::String(self.text.trim().to_owned()),
            (None, false) => {
                let mut all = self.attributes;
                let text = self.text.trim();
                if !text.is_empty() {
                    all.insert("#text".into(), Value::String(text.to_owned()));
                }
                Value::Object(all)
            }
        };
        (self.name, value)
    }
}

// Arrays made from repeated names are told apart from a child whose own value is an array (which
// cannot happen in XML, but keeps the rule local) by a marker removed when the parent closes.
const REPEATS: &str = "\u{0}repeats";

fn mark_repeats(value: &mut Value) {
    if let Value::Array(items) = value {
        items.push(Value::String(REPEATS.into()));
    }
}

fn items_are_repeats(items: &[Value]) -> bool {
    items.last().and_then(Value::as_str) == Some(REPEATS)
}

fn unmark(children: &mut Map<String, Value>) {
    for value in children.values_mut() {
        if let Value::Array(items) = value
            && items_are_repeats(items)
        {
            items.pop();
        }
    }
}

/// `s3:Bucket` → `Bucket`.
fn local_name(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_owned(),
        None => name.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_ec2_answer_reads_as_maps_and_lists() {
        let text = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSecurityGroupsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
  <securityGroupInfo>
    <item><groupId>sg-1</groupId><groupName>web &amp; app</groupName><ipPermissions/></item>
    <item><groupId>sg-2</groupId><groupName>db</groupName><ipPermissions/></item>
  </securityGroupInfo>
</DescribeSecurityGroupsResponse>"#;
        assert_eq!(
            parse(text).unwrap(),
            json!({ "DescribeSecurityGroupsResponse": {
                "requestId": "59dbff89-35bd-4eac-99ed-be587EXAMPLE",
                "securityGroupInfo": { "item": [
                    { "groupId": "sg-1", "groupName": "web & app", "ipPermissions": "" },
                    { "groupId": "sg-2", "groupName": "db", "ipPermissions": "" },
                ]},
            }})
        );
    }

    #[test]
    fn a_single_item_stays_a_map_and_attributes_are_kept() {
        let text = r#"<a:Root xmlns:a="urn:x"><Item id="7">text</Item><Empty flag="y"/></a:Root>"#;
        assert_eq!(
            parse(text).unwrap(),
            json!({ "Root": { "Item": { "@id": "7", "#text": "text" }, "Empty": { "@flag": "y" } } })
        );
    }

    #[test]
    fn broken_xml_is_an_error_not_a_panic() {
        for text in [
            "",
            "<a>",
            "<a></b>",
            "</a>",
            "<a>&bogus;</a>",
            "<a/><b/>",
            "plain",
        ] {
            assert!(parse(text).is_err(), "{text:?} should not parse");
        }
    }
}
