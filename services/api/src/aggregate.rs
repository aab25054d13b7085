//! `GET /aggregate/{class}`: Parse's aggregate pipelines and `distinct`,
//! evaluated over the class's objects the same way on every store.

use oxbase_objects::{Auth, ParseError, ParseResult, code, query::WhereParser};
use oxbase_store::aggregate::{AggregateKind, AggregateRequest, distinct};
use oxbase_store::{Filter, Object, Query};
use serde_json::{Map, Value, json};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

/// The most objects one aggregation reads: the pipeline runs in memory.
const MAX_INPUT_OBJECTS: usize = 500_000;

impl App {
    pub(crate) async fn aggregate_route(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class_name: &str,
    ) -> ParseResult<Reply> {
        auth.require_master()?;
        if auth.read_only {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                "Cannot run an aggregation pipeline when using the readOnlyMasterKey",
            ));
        }
        let request = AggregateRequest::parse(&req.params)?;
        let results = match request.kind {
            AggregateKind::Distinct {
                field,
                where_clause,
            } => {
                let filter = self.where_filter(&where_clause)?;
                let objects = self.aggregate_input(class_name, filter).await?;
                distinct(&field, &objects)?
            }
            AggregateKind::Pipeline(pipeline) => {
                // Leading `$match` stages become the store query when they
                // are Parse queries, so only matching objects are read.
                let (matches, rest) = pipeline.clone().split_leading_matches();
                let pushed = matches
                    .iter()
                    .map(|m| self.where_filter(m))
                    .collect::<ParseResult<Vec<Filter>>>();
                let (filter, pipeline) = match pushed {
                    Ok(filters) => (filters.into_iter().fold(Filter::All, Filter::and), rest),
                    Err(_) => (Filter::All, pipeline),
                };
                let objects = self.aggregate_input(class_name, filter).await?;
                pipeline
                    .run(objects)?
                    .into_iter()
                    .map(Value::Object)
                    .collect()
            }
        };
        Ok(Reply::ok(json!({ "results": results })))
    }

    fn where_filter(&self, clause: &Map<String, Value>) -> ParseResult<Filter> {
        WhereParser::new(self.objects.limits()).parse(&Value::Object(clause.clone()))
    }

    /// The class's objects that match `filter`; none for a class that does
    /// not exist, as Parse Server answers.
    async fn aggregate_input(&self, class_name: &str, filter: Filter) -> ParseResult<Vec<Object>> {
        let query = Query::new(class_name)
            .filter(filter)
            .limit(MAX_INPUT_OBJECTS + 1);
        let objects = self.objects.find_raw(&query).await?;
        if objects.len() > MAX_INPUT_OBJECTS {
            return Err(ParseError::query(format!(
                "An aggregation may read at most {MAX_INPUT_OBJECTS} objects; add a $match first."
            )));
        }
        Ok(objects)
    }
}
